//! The forwarding database: lookup and source-MAC learning.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{HashMap, RingBuf},
};
use aya_log_ebpf::warn;
use xnos_common::{FDB_FLAG_STATIC, FDB_SIZE, FdbEntry, FdbKey, LEARN_RING_BYTES, LearnEvent};

use crate::{packet::ETH_ALEN, port::Stats};

/// Refreshing last-seen on every frame would bounce the entry's cache line between CPUs;
/// aging only needs it to the second.
const REFRESH_NS: u64 = 1_000_000_000;

/// What a hash map insert returns when the map is full.
const E2BIG: i32 = 7;

#[map]
static FDB: HashMap<FdbKey, FdbEntry> = HashMap::with_max_entries(
    if crate::NEXT_BUILD {
        FDB_SIZE + 1024
    } else {
        FDB_SIZE
    },
    0,
);

/// New and moved stations, for the daemon's StateDb.
#[map]
static LEARN_EVENTS: RingBuf = RingBuf::with_byte_size(LEARN_RING_BYTES, 0);

#[inline(always)]
pub fn lookup(vlan: u16, mac: [u8; ETH_ALEN]) -> Option<&'static FdbEntry> {
    // SAFETY: see port::get; entries are replaced whole or updated field by field.
    unsafe { FDB.get(&FdbKey { mac, vlan }) }
}

#[inline(always)]
pub fn learn(ifindex: u32, vlan: u16, mac: [u8; ETH_ALEN], stats: &Stats) {
    let key = FdbKey { mac, vlan };
    // The coarse clock (CLOCK_MONOTONIC_COARSE, kernel >= 5.11) is a plain read, much
    // cheaper than a clocksource read, and aging needs seconds.
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let old_ifindex = match FDB.get_ptr_mut(&key) {
        Some(entry) => {
            // SAFETY: pointer to a live map value.
            let entry = unsafe { &mut *entry };
            if entry.flags & FDB_FLAG_STATIC != 0 {
                return;
            }
            if entry.ifindex == ifindex {
                if now.wrapping_sub(entry.last_seen_ns) > REFRESH_NS {
                    entry.last_seen_ns = now;
                }
                return;
            }
            let old = entry.ifindex;
            entry.ifindex = ifindex;
            entry.last_seen_ns = now;
            old
        }
        None => {
            let entry = FdbEntry {
                ifindex,
                flags: 0,
                last_seen_ns: now,
            };
            // A racing CPU inserting the same MAC: nothing more to do. A full table
            // refuses: the map is a plain (not LRU) hash, so a flood of new MACs can never
            // evict a static entry or a station already learned. Refusals are counted per
            // port (the flooding port stands out) and, with `--datapath-log`, logged
            // (without it the verifier removes the logging code).
            if let Err(e) = FDB.insert(&key, &entry, u64::from(BPF_NOEXIST)) {
                if e == -E2BIG {
                    stats.learn_refused();
                    warn!(&(), "FDB full: {:mac} not learned in VLAN {}", mac, vlan);
                }
                return;
            }
            0
        }
    };
    stats.learned();
    // A full ring loses the event, not the entry: counted, it tells the daemon to read
    // the entry from the FDB map.
    let event = LearnEvent {
        key,
        ifindex,
        old_ifindex,
    };
    if LEARN_EVENTS.output::<LearnEvent>(&event, 0).is_err() {
        stats.learn_event_lost();
    }
}
