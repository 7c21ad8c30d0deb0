//! `xnos trace`: run the loaded trace program (the real pipeline, against the live maps,
//! through BPF_PROG_TEST_RUN) on a described packet and explain what the switch would do.
//! The trace program learns nothing and counts nothing, so tracing changes no state.

use std::{path::Path, sync::Mutex};

use aya::{
    maps::{Array, Map, MapData},
    programs::Xdp,
};
use aya_obj::programs::XdpAttachType;
use serde::{Deserialize, Serialize};
use xnos_common::{
    DropReason, PuntReason, ROUTE_FORWARD, ROUTE_LOCAL, TRACE_DROP, TRACE_FLOOD, TRACE_L2_UNICAST,
    TRACE_PUNT, TRACE_ROUTED, TRACE_TO_KERNEL, TraceRecord,
};

use crate::{
    mac::MacAddr,
    statedb::{RouteKind, RouteTable, State, words},
    testrun::{self, action_name},
};

words! {
    /// How a frame leaves a port.
    pub enum Tagging {
        Untagged = "untagged",
        Tagged = "tagged",
    }
}

words! {
    /// What the pipeline decided.
    #[derive(Default)]
    pub enum Verdict {
        /// L2 known unicast.
        Forward = "forward",
        Flood = "flood",
        Route = "route",
        /// Handed to the kernel by L3.
        Punt = "punt",
        /// Control frames and routed-port traffic the kernel takes.
        ToKernel = "to-kernel",
        Drop = "drop",
        #[default]
        Unknown = "unknown",
    }
}

/// One egress port of a flooded frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FloodPort {
    pub port: String,
    pub tagging: Tagging,
}

/// What the switch would do with a packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TraceView {
    pub ingress: String,
    pub verdict: Verdict,
    /// The XDP action the program returned.
    pub action: String,
    pub vlan: Option<u16>,
    pub egress: Option<String>,
    pub egress_tagging: Option<String>,
    /// Ports a flooded frame leaves through, with their tagging.
    pub flood: Vec<FloodPort>,
    pub drop_reason: Option<String>,
    pub punt_reason: Option<String>,
    /// The FDB entry that decided an L2 forward.
    pub fdb_entry: Option<String>,
    /// The route that matched (longest prefix), and what it said.
    pub route: Option<String>,
    pub nexthop: Option<String>,
    pub neighbor: Option<MacAddr>,
    /// Header changes: MACs, VLAN tag, TTL/hop limit.
    pub rewrites: Vec<String>,
    /// The frame as it would leave, in hex.
    pub frame_out: String,
}

/// Body of `POST /v1/trace`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceRequest {
    pub port: String,
    /// The frame, in hex.
    pub frame: String,
}

pub struct Tracer {
    program: Xdp,
    out: Mutex<Array<MapData, TraceRecord>>,
}

fn name_of(state: &State, ifindex: u32) -> String {
    state
        .observed
        .links
        .values()
        .find(|l| l.ifindex == ifindex)
        .map_or_else(|| format!("ifindex {ifindex}"), |l| l.name.clone())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let text: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a hex frame has only the digits 0-9 and a-f".into());
    }
    if !text.len().is_multiple_of(2) {
        return Err("a hex frame needs an even number of digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| format!("{:?} is not hex", &text[i..i + 2]))
        })
        .collect()
}

/// (VLAN tag, TTL or hop limit) of a frame, if it has them.
fn headers(frame: &[u8]) -> (Option<u16>, Option<u8>) {
    let (vlan, l3) = if frame.len() >= 18 && frame[12..14] == [0x81, 0x00] {
        (Some(u16::from_be_bytes([frame[14], frame[15]]) & 0xfff), 16)
    } else {
        (None, 12)
    };
    let ttl = match frame.get(l3..l3 + 2) {
        Some([0x08, 0x00]) => frame.get(l3 + 2 + 8).copied(),
        Some([0x86, 0xdd]) => frame.get(l3 + 2 + 7).copied(),
        _ => None,
    };
    (vlan, ttl)
}

fn rewrites(input: &[u8], output: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if input.len() < 12 || output.len() < 12 {
        return out;
    }
    let mac = |b: &[u8]| MacAddr(b.try_into().expect("6 bytes"));
    if input[..6] != output[..6] {
        out.push(format!(
            "dst MAC {} -> {}",
            mac(&input[..6]),
            mac(&output[..6])
        ));
    }
    if input[6..12] != output[6..12] {
        out.push(format!(
            "src MAC {} -> {}",
            mac(&input[6..12]),
            mac(&output[6..12])
        ));
    }
    let ((vin, tin), (vout, tout)) = (headers(input), headers(output));
    match (vin, vout) {
        (None, Some(v)) => out.push(format!("VLAN tag {v} pushed")),
        (Some(v), None) => out.push(format!("VLAN tag {v} popped")),
        (Some(a), Some(b)) if a != b => out.push(format!("VLAN tag {a} -> {b}")),
        _ => {}
    }
    if let (Some(a), Some(b)) = (tin, tout)
        && a != b
    {
        out.push(format!("TTL {a} -> {b}"));
    }
    out
}

/// The longest FIB prefix containing the packet's destination, as text.
fn matched_route(state: &State, frame: &[u8]) -> Option<String> {
    let l3 = if frame.get(12..14) == Some(&[0x81, 0x00]) {
        16
    } else {
        12
    };
    let dst: std::net::IpAddr = match frame.get(l3..l3 + 2)? {
        [0x08, 0x00] => <[u8; 4]>::try_from(frame.get(l3 + 2 + 16..l3 + 2 + 20)?)
            .ok()?
            .into(),
        [0x86, 0xdd] => <[u8; 16]>::try_from(frame.get(l3 + 2 + 24..l3 + 2 + 40)?)
            .ok()?
            .into(),
        _ => return None,
    };
    state
        .observed
        .fib
        .iter()
        .filter(|(k, r)| {
            k.prefix.contains(&dst) && matches!(r.kind, RouteKind::Unicast | RouteKind::Local)
        })
        .max_by_key(|(k, _)| {
            (
                k.prefix.prefix_len(),
                k.table == RouteTable::Local,
                std::cmp::Reverse(k.metric),
            )
        })
        .map(|(k, r)| {
            format!(
                "{} ({}, {}, proto {}, metric {})",
                k.prefix, k.table, r.kind, r.protocol, k.metric
            )
        })
}

impl Tracer {
    pub fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        let program = Xdp::from_pin(pin_dir.join("progs/xnos_trace"), XdpAttachType::Interface)?;
        let data = MapData::from_pin(pin_dir.join("maps/TRACE_OUT"))?;
        let out = Array::try_from(Map::Array(data))?;
        Ok(Self {
            program,
            out: Mutex::new(out),
        })
    }

    /// Trace `frame` arriving on `port` against the live maps.
    pub fn trace(&self, state: &State, port: &str, frame: &[u8]) -> Result<TraceView, String> {
        let ifindex = state
            .observed
            .port_status
            .get(port)
            .map(|s| s.ifindex)
            .filter(|i| *i != 0)
            .ok_or_else(|| format!("{port:?} is not an attached port of this switch"))?;
        if frame.len() < 14 {
            return Err("a frame needs at least an Ethernet header (14 bytes)".into());
        }
        // One trace at a time: the program writes a single record.
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let fd = self.program.fd().map_err(|e| e.to_string())?;
        let run = testrun::run_xdp(std::os::fd::AsFd::as_fd(fd), ifindex, frame, 1)
            .map_err(|e| e.to_string())?;
        let record = out.get(&0, 0).map_err(|e| e.to_string())?;
        drop(out);
        Ok(explain(state, port, frame, &run.frame, &record))
    }
}

fn explain(state: &State, port: &str, input: &[u8], output: &[u8], t: &TraceRecord) -> TraceView {
    let mut view = TraceView {
        ingress: port.into(),
        action: action_name(t.action).into(),
        vlan: (t.vlan != 0).then_some(t.vlan),
        rewrites: rewrites(input, output),
        frame_out: hex(output),
        ..TraceView::default()
    };
    let tagging = |untagged: u32, vlan: u16| {
        if untagged != 0 {
            "untagged".to_string()
        } else {
            format!("tagged VLAN {vlan}")
        }
    };
    match t.stage {
        TRACE_L2_UNICAST => {
            view.verdict = Verdict::Forward;
            let egress = name_of(state, t.egress_ifindex);
            view.fdb_entry = Some(format!(
                "VLAN {} MAC {} on {egress}",
                t.vlan,
                MacAddr(input[..6].try_into().expect("6 bytes"))
            ));
            view.egress = Some(egress);
            view.egress_tagging = Some(tagging(t.untagged, t.out_vlan));
        }
        TRACE_FLOOD => {
            view.verdict = Verdict::Flood;
            view.flood = flood_ports(state, port, t.out_vlan);
            // The egress program finishes each copy; show the frame as the first port gets it.
            if let Some(first) = view.flood.first()
                && first.tagging == Tagging::Untagged
            {
                view.rewrites.retain(|r| !r.starts_with("VLAN tag"));
            }
        }
        TRACE_DROP => {
            view.verdict = Verdict::Drop;
            view.drop_reason = DropReason::ALL
                .iter()
                .find(|r| **r as u32 + 1 == t.drop_reason)
                .map(|r| r.name().to_string());
            view.rewrites.clear();
        }
        TRACE_TO_KERNEL => view.verdict = Verdict::ToKernel,
        TRACE_ROUTED | TRACE_PUNT => {
            view.verdict = if t.stage == TRACE_ROUTED {
                Verdict::Route
            } else {
                Verdict::Punt
            };
            view.route = matched_route(state, input);
            if t.route_kind == ROUTE_FORWARD {
                view.nexthop = Some(format!(
                    "#{} of group {} via {}",
                    t.nexthop_index,
                    t.nhg,
                    name_of(state, t.nexthop_ifindex)
                ));
            } else if t.route_kind == ROUTE_LOCAL {
                view.nexthop = Some("the switch itself".into());
            }
            if t.neigh_mac != [0; 6] {
                view.neighbor = Some(MacAddr(t.neigh_mac));
            }
            view.egress = Some(name_of(state, t.egress_ifindex));
            view.egress_tagging = Some(tagging(t.untagged, t.out_vlan));
            view.punt_reason = PuntReason::ALL
                .iter()
                .find(|r| **r as u32 + 1 == t.punt_reason)
                .map(|r| r.name().to_string());
        }
        _ => view.verdict = Verdict::Unknown,
    }
    view
}

/// The ports a flood in VLAN `vlan` leaves through, as the datapath programmed them
/// (devmap broadcast excludes the ingress port), with the tagging each applies.
fn flood_ports(state: &State, ingress: &str, vlan: u16) -> Vec<FloodPort> {
    state
        .observed
        .datapath_flood
        .get(&vlan)
        .map(|flood| {
            flood
                .ports
                .iter()
                .filter(|member| member.port != ingress)
                .map(|member| FloodPort {
                    port: member.port.clone(),
                    tagging: if member.tagged {
                        Tagging::Tagged
                    } else {
                        Tagging::Untagged
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}
