//! Programs for `cargo xtask bench` only, in an object of their own that only the
//! benchmark loads (xnosd never sees them): a traffic generator for BPF_PROG_TEST_RUN
//! with live frames, and a counting sink; and for the tests, a program that passes every
//! frame (another program holding a port's XDP hook).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// Length of the generated frames (64 bytes on the wire with the FCS).
const FRAME_LEN: usize = 60;
/// Flows the generator cycles through (by UDP source port).
const FLOWS: u32 = 64;
const UDP_SPORT_OFFSET: usize = 34;

#[map]
static BENCH_TEMPLATE: Array<[u8; FRAME_LEN]> = Array::with_max_entries(1, 0);

#[map]
static BENCH_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The whole frame, if it is at least `FRAME_LEN` bytes long.
#[inline(always)]
fn frame(ctx: &XdpContext) -> Option<*mut [u8; FRAME_LEN]> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + FRAME_LEN > end {
        return None;
    }
    Some(start as *mut [u8; FRAME_LEN])
}

/// Live-frames pages are recycled with whatever the device under test wrote into them:
/// write the whole frame again every time, with the next flow's source port.
#[xdp]
pub fn xnos_bench_gen(ctx: XdpContext) -> u32 {
    let (Some(template), Some(frame)) = (BENCH_TEMPLATE.get(0), frame(&ctx)) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = BENCH_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: bounds checked by `frame`; per-CPU counter.
    let (frame, seq) = unsafe { (&mut *frame, &mut *seq) };
    *frame = *template;
    *seq = seq.wrapping_add(1);
    let port = (1024 + *seq % FLOWS) as u16;
    frame[UDP_SPORT_OFFSET..UDP_SPORT_OFFSET + 2].copy_from_slice(&port.to_be_bytes());
    xdp_action::XDP_TX
}

#[xdp]
pub fn xnos_bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(count) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: per-CPU counter.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn xnos_test_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
