//! BPF_PROG_TEST_RUN for the XDP (and TC) programs: run a loaded program on a crafted frame, as if it
//! had arrived on a given interface, and get back the verdict and the rewritten frame.
//! Runs through the real verifier-approved program against the live maps (kernel >= 5.15
//! for `ingress_ifindex` in the context).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

/// `struct xdp_md` as passed in `ctx_in`.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Room for headers the program pushes (VLAN tags).
const OUT_HEADROOM: usize = 256;

/// What one run of the program did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpRun {
    /// XDP action: 0 aborted, 1 drop, 2 pass, 3 tx, 4 redirect.
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Average run time per repetition in nanoseconds.
    pub duration_ns: u32,
}

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Run `prog` on `frame` received on `ingress_ifindex` (an interface in the caller's
/// network namespace), `repeat` times.
pub fn run_xdp(
    prog: BorrowedFd<'_>,
    ingress_ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> io::Result<XdpRun> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..Default::default()
    };
    run_with_ctx(prog, &ctx, frame, repeat)
}

/// One BPF_PROG_TEST_RUN of `prog` on `frame` with the context `ctx`; the verdict and the
/// frame as the program left it.
fn run_with_ctx<C>(prog: BorrowedFd<'_>, ctx: &C, frame: &[u8], repeat: u32) -> io::Result<XdpRun> {
    let mut out = vec![0u8; frame.len() + OUT_HEADROOM];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<C>() as u32,
        ctx_in: ctx as *const C as u64,
        ..Default::default()
    };
    test_run(&mut attr, "bpf(BPF_PROG_TEST_RUN)")?;
    out.truncate(attr.data_size_out as usize);
    Ok(XdpRun {
        action: attr.retval,
        frame: out,
        duration_ns: attr.duration,
    })
}

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// The head of `struct __sk_buff` up to `ifindex`, as passed in `ctx_in` (the kernel
/// zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct SkBuffHead {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

/// Run the TC program `prog` on `frame` received on `ifindex` (an interface in the caller's
/// network namespace), `repeat` times. `action` is the TC verdict (`TC_ACT_*`).
pub fn run_tc(prog: BorrowedFd<'_>, ifindex: u32, frame: &[u8], repeat: u32) -> io::Result<XdpRun> {
    let ctx = SkBuffHead {
        ingress_ifindex: ifindex,
        ifindex,
        ..Default::default()
    };
    run_with_ctx(prog, &ctx, frame, repeat)
}

/// `struct __sk_buff` up to `gso_size`, for a GSO packet (kernel >= 5.18 for `gso_size`).
#[repr(C)]
#[derive(Default)]
struct SkBuffGso {
    head: SkBuffHead,
    /// From `tc_index` to `wire_len`: left zero.
    _zero: [u32; 30],
    gso_segs: u32,
    /// `sk`, a pointer: zero.
    _sk: u64,
    gso_size: u32,
    _pad: u32,
}

/// Run the TC program `prog` once on `frame` as a GSO packet of `segments` segments of
/// `gso_size` bytes (one GRO merged), received on `ifindex`.
pub fn run_tc_gso(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    frame: &[u8],
    segments: u32,
    gso_size: u32,
) -> io::Result<XdpRun> {
    const _: () = assert!(std::mem::offset_of!(SkBuffGso, gso_size) == 176);
    let ctx = SkBuffGso {
        head: SkBuffHead {
            ingress_ifindex: ifindex,
            ifindex,
            ..Default::default()
        },
        gso_segs: segments,
        gso_size,
        ..Default::default()
    };
    run_with_ctx(prog, &ctx, frame, 1)
}

const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Run `prog` `count` times in live-frames mode (kernel >= 5.18): each run gets a fresh
/// page with `frame` in it, and XDP_TX/XDP_REDIRECT really send it. A traffic generator.
pub fn run_xdp_live(
    prog: BorrowedFd<'_>,
    ingress_ifindex: u32,
    frame: &[u8],
    count: u32,
) -> io::Result<()> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: count,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    test_run(&mut attr, "bpf(BPF_PROG_TEST_RUN, live frames)")
}

/// The BPF_PROG_TEST_RUN syscall; `what` names the call in errors.
fn test_run(attr: &mut TestRunAttr, what: &str) -> io::Result<()> {
    // SAFETY: the callers fill attr with pointers to buffers of the sizes it states,
    // which outlive this call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

/// Human name of an XDP action.
pub fn action_name(action: u32) -> &'static str {
    match action {
        XDP_ABORTED => "aborted",
        XDP_DROP => "drop",
        XDP_PASS => "pass",
        XDP_TX => "tx",
        XDP_REDIRECT => "redirect",
        _ => "unknown",
    }
}
