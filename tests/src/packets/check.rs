//! The invariants every result of the packet fuzzer must meet, judged from the frame that
//! went in, the verdict and frame that came out, and which port counters moved: never out
//! of the ingress port, only into VLANs the egress port carries and tagged as its mode
//! says, routed packets with TTL/hop limit one less and a correct checksum, malformed
//! frames never forwarded, no unexpected verdict.

use super::{
    generate::{ether_type_at, ipv4_checksum},
    topology::{HOSTS, Port, ROUTER, SVI_VLANS},
};

/// What became of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Dropped,
    /// Passed to the kernel's netdev of the ingress port (XDP_PASS, TC_ACT_OK).
    ToKernel,
    /// Handed by L3 to the kernel, through the SVI's internal port.
    Punted,
    Forwarded,
    Flooded,
    Routed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Dropped,
        Outcome::ToKernel,
        Outcome::Punted,
        Outcome::Forwarded,
        Outcome::Flooded,
        Outcome::Routed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Dropped => "dropped",
            Outcome::ToKernel => "to-kernel",
            Outcome::Punted => "punted",
            Outcome::Forwarded => "forwarded",
            Outcome::Flooded => "flooded",
            Outcome::Routed => "routed",
        }
    }
}

/// A program's verdict, in terms both program types share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Pass,
    Redirect,
    /// Anything else the program returned (XDP_ABORTED, XDP_TX, ...): never expected.
    Other(u32),
}

/// What the counters say a run did: per port (index into the switch's ports) the frames
/// it sent, and on the ingress port the floods and punts.
#[derive(Debug, Default)]
pub struct Effects {
    pub tx: Vec<(usize, u64)>,
    pub flooded: u64,
    pub punted: u64,
}

/// One run of one program on one frame.
pub struct Run<'a> {
    pub ports: &'a [Port],
    pub ingress: usize,
    /// The TC program: its floods clone the frame to each member port (counted), where
    /// XDP broadcasts it through a devmap, which BPF_PROG_TEST_RUN does not carry out.
    pub tc: bool,
    pub input: &'a [u8],
    pub verdict: Verdict,
    pub output: &'a [u8],
    pub effects: &'a Effects,
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The VLAN a port must put a frame in, or why it must drop it (802.1Q: priority tags
/// count as untagged; only one tag is looked at).
pub fn classify(port: &Port, frame: &[u8]) -> Result<u16, &'static str> {
    let tag = if be16(frame, 12) == 0x8100 {
        if frame.len() < 18 {
            return Err("its 802.1Q header is truncated");
        }
        Some(be16(frame, 14) & 0x0fff)
    } else {
        None
    };
    let vlan = match tag {
        Some(vid) if vid != 0 => {
            if port.access {
                return Err("it is tagged on an access port");
            }
            if !port.carries(vid) {
                return Err("the port does not carry its VLAN");
            }
            vid
        }
        _ => port
            .untagged
            .ok_or("it is untagged on a port without a native VLAN")?,
    };
    if frame[6] & 1 != 0 || frame[6..12] == [0; 6] {
        return Err("its source MAC is not a station's");
    }
    Ok(vlan)
}

/// The frame without its 802.1Q tag (if it has one in its bytes).
fn untagged(frame: &[u8]) -> Vec<u8> {
    if frame.len() >= 18 && be16(frame, 12) == 0x8100 {
        [&frame[..12], &frame[16..]].concat()
    } else {
        frame.to_vec()
    }
}

/// The frame as a port in `vlan` sends it: untagged, or with the tag of `vlan` (priority
/// and DEI kept from the tag it came with). A tag inside the first one is payload.
fn as_sent(input: &[u8], vlan: u16, untagged_egress: bool) -> Vec<u8> {
    let base = untagged(input);
    if untagged_egress {
        return base;
    }
    let prio = tag_of(input).map_or(0, |_| input[14] & 0xf0);
    let tag = [0x81, 0x00, prio | (vlan >> 8) as u8, vlan as u8];
    [&base[..12], &tag[..], &base[12..]].concat()
}

/// Whether a run left `expected` behind. TC pops a tag with `bpf_skb_vlan_pop`, which
/// moves the next tag, if there is one, out of the bytes into the skb (where the egress
/// device puts it back): BPF_PROG_TEST_RUN returns the bytes only.
fn left(run: &Run<'_>, expected: &[u8]) -> bool {
    if run.output == expected {
        return true;
    }
    let next_is_tag = expected.len() >= 16
        && matches!(be16(expected, 12), 0x8100 | 0x88a8)
        && tag_of(run.input).is_some();
    run.tc && next_is_tag && run.output == [&expected[..12], &expected[16..]].concat()
}

/// The tag a frame leaves with, if any.
fn tag_of(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 18 && be16(frame, 12) == 0x8100).then(|| be16(frame, 14) & 0x0fff)
}

fn is_link_local(mac: &[u8]) -> bool {
    mac[..5] == [1, 0x80, 0xc2, 0, 0] && mac[5] & 0xf0 == 0
}

/// Whether `frame` leaves `port` in `vlan` as the port's mode says.
fn check_tagging(port: &Port, vlan: u16, frame: &[u8]) -> Result<(), String> {
    if !port.carries(vlan) {
        return Err(format!(
            "sent into VLAN {vlan}, which {} does not carry",
            port.name
        ));
    }
    let want = (port.untagged != Some(vlan)).then_some(vlan);
    let got = tag_of(frame);
    if got != want {
        return Err(format!(
            "left {} in VLAN {vlan} with tag {got:?}, the port wants {want:?}",
            port.name
        ));
    }
    Ok(())
}

/// Judge one run: the outcome, or the invariant it broke.
pub fn check(run: &Run<'_>) -> Result<Outcome, String> {
    let ingress = &run.ports[run.ingress];
    let tx_ports: Vec<usize> = run.effects.tx.iter().map(|(p, _)| *p).collect();
    let outcome = match run.verdict {
        Verdict::Other(action) => return Err(format!("unexpected verdict {action}")),
        Verdict::Pass => Outcome::ToKernel,
        Verdict::Drop if run.tc && run.effects.flooded > 0 => Outcome::Flooded,
        Verdict::Drop => Outcome::Dropped,
        Verdict::Redirect => match tx_ports[..] {
            [] if !run.tc && run.effects.flooded > 0 => Outcome::Flooded,
            [_] if run.effects.punted > 0 => Outcome::Punted,
            [_] if run.output.get(..6) != run.input.get(..6) => Outcome::Routed,
            [_] => Outcome::Forwarded,
            _ => return Err(format!("redirected, but sent out of ports {tx_ports:?}")),
        },
    };
    if matches!(outcome, Outcome::Dropped | Outcome::ToKernel) && !tx_ports.is_empty() {
        return Err(format!(
            "{} but sent out of ports {tx_ports:?}",
            outcome.name()
        ));
    }
    if outcome == Outcome::Dropped {
        return Ok(outcome);
    }
    let vlan =
        classify(ingress, run.input).map_err(|why| format!("{} although {why}", outcome.name()))?;
    let to_router = run.input[..6] == ROUTER && SVI_VLANS.contains(&vlan);
    if to_router && !matches!(outcome, Outcome::Routed | Outcome::Punted) {
        return Err(format!("{} although sent to the router", outcome.name()));
    }
    if is_link_local(run.input) != (outcome == Outcome::ToKernel) {
        return Err(format!(
            "{}: link-local frames, and only those, go to the kernel",
            outcome.name()
        ));
    }
    let egress = tx_ports.first().map(|p| &run.ports[*p]);
    match (outcome, egress) {
        (Outcome::ToKernel, _) => {
            if run.output != run.input {
                return Err("changed on its way to the kernel".into());
            }
        }
        (Outcome::Flooded, _) => check_flood(run, vlan, &tx_ports)?,
        (Outcome::Forwarded, Some(egress)) => {
            if egress.ifindex == ingress.ifindex {
                return Err(format!("forwarded out of its ingress port {}", egress.name));
            }
            if run.input[0] & 1 != 0 {
                return Err("a group address forwarded as known unicast".into());
            }
            if !egress.carries(vlan) {
                return Err(format!(
                    "forwarded into VLAN {vlan}, which {} does not carry",
                    egress.name
                ));
            }
            let untagged_egress = egress.untagged == Some(vlan);
            if !left(run, &as_sent(run.input, vlan, untagged_egress)) {
                return Err(format!(
                    "forwarded to {} not as it sends VLAN {vlan} (untagged: {untagged_egress})",
                    egress.name
                ));
            }
        }
        (Outcome::Punted, Some(egress)) => {
            if !to_router || egress.svi != Some(vlan) {
                return Err(format!(
                    "punted to {} from VLAN {vlan} (to the router: {to_router})",
                    egress.name
                ));
            }
            if !left(run, &untagged(run.input)) {
                return Err("changed on its way to the kernel (beyond its tag)".into());
            }
        }
        (Outcome::Routed, Some(egress)) => {
            if !to_router {
                return Err("routed although not sent to the router".into());
            }
            check_routed(run, egress)?;
        }
        _ => unreachable!("every redirect outcome has one egress port"),
    }
    Ok(outcome)
}

fn check_flood(run: &Run<'_>, vlan: u16, tx_ports: &[usize]) -> Result<(), String> {
    if run.tc {
        // Exactly the other ports of the VLAN each got one clone.
        let want: Vec<usize> = (0..run.ports.len())
            .filter(|p| *p != run.ingress && run.ports[*p].carries(vlan))
            .collect();
        if tx_ports != want || run.effects.tx.iter().any(|(_, n)| *n != 1) {
            return Err(format!(
                "flooded in VLAN {vlan} to ports {:?}, not to {want:?} once each",
                run.effects.tx
            ));
        }
        return Ok(());
    }
    // XDP hands the devmap the frame tagged with its VLAN (priority and DEI kept); the egress
    // program pops it per port.
    let want = as_sent(run.input, vlan, false);
    if run.output != want {
        return Err(format!(
            "flooded in VLAN {vlan} not as the frame tagged with it"
        ));
    }
    Ok(())
}

/// A routed packet: well-formed when it came in, from the router to a neighbour, into the
/// neighbour's VLAN as the egress port wants it, TTL or hop limit one less, header checksum
/// right, payload untouched, Ethernet padding gone.
fn check_routed(run: &Run<'_>, egress: &Port) -> Result<(), String> {
    let (input, output) = (run.input, run.output);
    let Some(host) = HOSTS.iter().find(|h| output[..6] == h.mac) else {
        return Err(format!(
            "routed to {:02x?}, no neighbour's MAC",
            &output[..6]
        ));
    };
    if output[6..12] != ROUTER {
        return Err("routed without the router MAC as its source".into());
    }
    check_tagging(egress, host.vlan, output)?;
    let at_in = ether_type_at(input).ok_or("routed without an EtherType")?;
    let at_out = ether_type_at(output).ok_or("routed without an EtherType")?;
    if at_in > 16 || be16(input, at_in) != be16(output, at_out) {
        return Err("routed with other tags or another EtherType".into());
    }
    let (l3_in, l3_out) = (&input[at_in + 2..], &output[at_out + 2..]);
    match be16(input, at_in) {
        0x0800 => check_ipv4(l3_in, l3_out),
        0x86dd => check_ipv6(l3_in, l3_out),
        other => Err(format!("routed an EtherType {other:#06x} packet")),
    }
}

fn check_ipv4(ip: &[u8], out: &[u8]) -> Result<(), String> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err("routed a truncated or non-version-4 IPv4 header".into());
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if header < 20 || total < header || total > ip.len() {
        return Err(format!(
            "routed an IPv4 packet of header length {header}, total length {total}, {} bytes",
            ip.len()
        ));
    }
    if ipv4_checksum(&ip[..header]) != be16(ip, 10) {
        return Err("routed an IPv4 packet with a bad header checksum".into());
    }
    if ip[8] <= 1 {
        return Err(format!("routed an IPv4 packet with TTL {}", ip[8]));
    }
    if out.len() != total {
        return Err(format!("routed as {} bytes of IP, not {total}", out.len()));
    }
    if out[8] != ip[8] - 1 {
        return Err(format!("TTL {} routed as {}", ip[8], out[8]));
    }
    if be16(out, 10) != ipv4_checksum(&out[..header]) {
        return Err("routed with a wrong IPv4 header checksum".into());
    }
    let same = |a: &[u8], b: &[u8]| a[..8] == b[..8] && a[9..10] == b[9..10] && a[12..] == b[12..];
    if !same(&ip[..total], out) {
        return Err("routed with changes beyond TTL and checksum".into());
    }
    Ok(())
}

fn check_ipv6(ip: &[u8], out: &[u8]) -> Result<(), String> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err("routed a truncated or non-version-6 IPv6 header".into());
    }
    let total = 40 + usize::from(be16(ip, 4));
    if total > ip.len() {
        return Err(format!(
            "routed an IPv6 packet of {total} bytes in {}",
            ip.len()
        ));
    }
    if ip[7] <= 1 {
        return Err(format!("routed an IPv6 packet with hop limit {}", ip[7]));
    }
    if ip[6] == 0 {
        return Err(
            "routed an IPv6 packet with hop-by-hop options, the kernel's to examine".into(),
        );
    }
    if out.len() != total {
        return Err(format!(
            "routed as {} bytes of IPv6, not {total}",
            out.len()
        ));
    }
    if out[7] != ip[7] - 1 {
        return Err(format!("hop limit {} routed as {}", ip[7], out[7]));
    }
    if ip[..7] != out[..7] || ip[8..total] != out[8..] {
        return Err("routed with changes beyond the hop limit".into());
    }
    Ok(())
}
