//! Switch port configuration and per-port counters.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use xnos_common::{DropReason, MAX_PORTS, PortConf, PortStats};

/// Switch ports of this instance, keyed by ifindex. Written only by the daemon.
#[map]
static PORTS: HashMap<u32, PortConf> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Per-port counters, indexed by `PortConf::stats_slot`.
#[map]
static PORT_STATS: PerCpuArray<PortStats> = PerCpuArray::with_max_entries(MAX_PORTS, 0);

/// Frames flooded per VLAN, indexed by VLAN ID.
#[map]
static VLAN_FLOODED: PerCpuArray<u64> = PerCpuArray::with_max_entries(4096, 0);

#[inline(always)]
pub fn vlan_flooded<const TRACE: bool>(vid: u16) {
    if TRACE {
        return;
    }
    if let Some(count) = VLAN_FLOODED.get_ptr_mut(u32::from(vid & 0xfff)) {
        // SAFETY: per-CPU value.
        unsafe { *count += 1 };
    }
}

#[inline(always)]
pub fn get(ifindex: u32) -> Option<&'static PortConf> {
    // SAFETY: map values live as long as the program runs; the daemon replaces entries
    // whole, so a concurrent update is seen as either the old or the new value.
    unsafe { PORTS.get(&ifindex) }
}

/// This CPU's counters of one port (no atomics needed: the map is per-CPU).
pub struct Stats(Option<*mut PortStats>);

impl Stats {
    /// The counters of `port`; none at all while tracing (tracing changes nothing).
    #[inline(always)]
    pub fn of<const TRACE: bool>(port: &PortConf) -> Self {
        if TRACE {
            return Self(None);
        }
        Self(PORT_STATS.get_ptr_mut(port.stats_slot))
    }

    #[inline(always)]
    fn update(&self, f: impl FnOnce(&mut PortStats)) {
        if let Some(stats) = self.0 {
            // SAFETY: per-CPU value; nothing else on this CPU runs while we do.
            f(unsafe { &mut *stats });
        }
    }

    #[inline(always)]
    pub fn rx(&self, bytes: usize) {
        self.update(|s| {
            s.rx_packets += 1;
            s.rx_bytes += bytes as u64;
        });
    }

    #[inline(always)]
    pub fn tx(&self, bytes: usize) {
        self.update(|s| {
            s.tx_packets += 1;
            s.tx_bytes += bytes as u64;
        });
    }

    #[inline(always)]
    pub fn flood(&self) {
        self.update(|s| s.flooded += 1);
    }

    #[inline(always)]
    pub fn to_kernel(&self) {
        self.update(|s| s.to_kernel += 1);
    }

    #[inline(always)]
    pub fn punted(&self) {
        self.update(|s| s.punted += 1);
    }

    #[inline(always)]
    pub fn learned(&self) {
        self.update(|s| s.learned += 1);
    }

    #[inline(always)]
    pub fn learn_refused(&self) {
        self.update(|s| s.learn_refused += 1);
    }

    #[inline(always)]
    pub fn learn_event_lost(&self) {
        self.update(|s| s.learn_events_lost += 1);
    }

    #[inline(always)]
    pub fn drop(&self, reason: DropReason) {
        // The compiler knows the enum is in range and would drop a plain bounds check,
        // but the verifier does not: hide the value so the check stays.
        // SAFETY: reading a local.
        let index = unsafe { core::ptr::read_volatile(&(reason as u32)) } as usize;
        self.update(|s| {
            if let Some(count) = s.drops.get_mut(index) {
                *count += 1;
            }
        });
    }
}
