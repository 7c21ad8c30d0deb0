//! `xnos trace`: the ingress pipeline compiled a second time with TRACE = true records
//! what it decides here instead of counting, learning or rate-limiting anything.

use aya_ebpf::{macros::map, maps::Array};
use xnos_common::TraceRecord;

#[map]
static TRACE_OUT: Array<TraceRecord> = Array::with_max_entries(1, 0);

/// Let `f` fill in the trace record; compiled away when not tracing.
#[inline(always)]
pub fn record<const TRACE: bool>(f: impl FnOnce(&mut TraceRecord)) {
    if !TRACE {
        return;
    }
    if let Some(record) = TRACE_OUT.get_ptr_mut(0) {
        // SAFETY: a live map value; only the trace program writes it, one run at a time.
        f(unsafe { &mut *record });
    }
}
