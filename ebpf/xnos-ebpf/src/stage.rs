//! Where a bench build of the ingress pipeline stops, so that `cargo xtask bench` can time
//! the pipeline truncated after each stage (this VM has no PMU) and take the differences.
//!
//! The pipeline carries the stage to stop after as a const generic (`NONE` in xnosd's
//! programs). The checks and the programs that stop exist only with the `stages` feature,
//! in an object that only the benchmark and its test load (tests/build.rs): xnosd's object
//! is built from the same code without them.

/// Stop nowhere: the whole pipeline.
pub const NONE: u32 = 0;
/// Before anything: the cost of running a program at all.
pub const ENTRY: u32 = 1;
pub const PORT_LOOKUP: u32 = 2;
pub const RX_COUNTERS: u32 = 3;
pub const PARSE: u32 = 4;
pub const VLAN_CLASSIFY: u32 = 5;
pub const LEARN: u32 = 6;
pub const L3_INTERFACE: u32 = 7;
// Switched frames.
pub const FDB_LOOKUP: u32 = 8;
pub const EGRESS_PORT: u32 = 9;
pub const TAG_REWRITE: u32 = 10;
pub const REDIRECT: u32 = 11;
// Routed packets.
pub const IP_CHECKS: u32 = 12;
pub const LPM: u32 = 13;
pub const NEXTHOP_GROUP: u32 = 14;
pub const NEIGHBOUR: u32 = 15;
pub const L3_EGRESS: u32 = 16;
pub const REWRITE: u32 = 17;
pub const TX_COUNTERS: u32 = 18;
pub const L3_REDIRECT: u32 = 19;

/// `stop_after!(STOP, STAGE, keep, value)`: where `STOP` is `STAGE`, return `value`. The
/// values computed so far (`keep`) are handed to the compiler as used, or it would remove
/// the work whose results only later stages read, and the next stage would be charged for
/// it. Without the `stages` feature (xnosd's build) it is nothing at all, so that xnosd's
/// programs are the very code they would be without it.
#[cfg(feature = "stages")]
macro_rules! stop_after {
    ($stop:ident, $stage:ident, $keep:expr, $value:expr) => {
        if $stop == $crate::stage::$stage {
            core::hint::black_box(&$keep);
            return $value;
        }
    };
}

#[cfg(not(feature = "stages"))]
macro_rules! stop_after {
    ($($ignored:tt)*) => {};
}

pub(crate) use stop_after;

#[cfg(feature = "stages")]
mod programs {
    use aya_ebpf::{macros::xdp, programs::XdpContext};

    use super::*;

    /// One XDP program per stage, `xnos_stage_<stage>`, running the ingress pipeline up to
    /// the end of that stage.
    macro_rules! stage_programs {
        ($($name:ident => $stage:ident),* $(,)?) => {$(
            #[xdp]
            pub fn $name(ctx: XdpContext) -> u32 {
                // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
                let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
                crate::pipeline::<false, $stage, _>(&ctx, ifindex)
            }
        )*};
    }

    stage_programs! {
        xnos_stage_entry => ENTRY,
        xnos_stage_port_lookup => PORT_LOOKUP,
        xnos_stage_rx_counters => RX_COUNTERS,
        xnos_stage_parse => PARSE,
        xnos_stage_vlan_classify => VLAN_CLASSIFY,
        xnos_stage_learn => LEARN,
        xnos_stage_l3_interface => L3_INTERFACE,
        xnos_stage_fdb_lookup => FDB_LOOKUP,
        xnos_stage_egress_port => EGRESS_PORT,
        xnos_stage_tag_rewrite => TAG_REWRITE,
        xnos_stage_redirect => REDIRECT,
        xnos_stage_ip_checks => IP_CHECKS,
        xnos_stage_lpm => LPM,
        xnos_stage_nexthop_group => NEXTHOP_GROUP,
        xnos_stage_neighbour => NEIGHBOUR,
        xnos_stage_l3_egress => L3_EGRESS,
        xnos_stage_rewrite => REWRITE,
        xnos_stage_tx_counters => TX_COUNTERS,
        xnos_stage_l3_redirect => L3_REDIRECT,
    }
}
