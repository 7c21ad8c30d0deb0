//! `xnos trace`: a described packet through the real datapath program, and its verdict.

use xnos::{
    api::{Client, ClientError, InterfaceView},
    trace::{TraceRequest, TraceView, Verdict},
};

use crate::args::TraceArgs;

pub async fn run(client: &Client, args: TraceArgs) -> Result<(), ClientError> {
    let frame = match &args.hex {
        Some(hex) => hex.clone(),
        None => xnos::trace::hex(&build_frame(client, &args).await?),
    };
    let view: TraceView = client
        .post(
            "/v1/trace",
            &TraceRequest {
                port: args.port.clone(),
                frame,
            },
        )
        .await?;
    if args.format.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).expect("serialises")
        );
    } else {
        print!("{}", render_trace(&view));
    }
    Ok(())
}

/// The frame `xnos trace` describes with its options.
async fn build_frame(client: &Client, args: &TraceArgs) -> Result<Vec<u8>, ClientError> {
    use etherparse::PacketBuilder;
    let dst_mac = match (args.dst_mac, args.dst_ip) {
        (Some(mac), _) => mac,
        (None, Some(_)) => {
            let ifaces: Vec<InterfaceView> = client.get("/v1/interfaces").await?;
            ifaces.first().map(|i| i.mac).ok_or_else(|| {
                ClientError::Refused("the switch has no L3 interface: give --dst-mac".into())
            })?
        }
        (None, None) => {
            return Err(ClientError::Refused(
                "give --dst-mac, --dst-ip or --hex".into(),
            ));
        }
    };
    let mut frame = Vec::new();
    let payload = [0u8; 18];
    let eth = PacketBuilder::ethernet2(args.src_mac.0, dst_mac.0);
    let bad = |e: etherparse::err::packet::BuildWriteError| {
        ClientError::Refused(format!("cannot build the frame: {e}"))
    };
    match args.dst_ip {
        None => {
            frame.extend_from_slice(&dst_mac.0);
            frame.extend_from_slice(&args.src_mac.0);
            frame.extend_from_slice(&[0x88, 0xb5]);
            frame.extend_from_slice(&[0; 46]);
        }
        Some(dst) => {
            let ip = match (args.src_ip, dst) {
                (Some(std::net::IpAddr::V4(s)), std::net::IpAddr::V4(d)) => {
                    eth.ipv4(s.octets(), d.octets(), args.ttl)
                }
                (None, std::net::IpAddr::V4(d)) => eth.ipv4([192, 0, 2, 1], d.octets(), args.ttl),
                (Some(std::net::IpAddr::V6(s)), std::net::IpAddr::V6(d)) => {
                    eth.ipv6(s.octets(), d.octets(), args.ttl)
                }
                (None, std::net::IpAddr::V6(d)) => eth.ipv6(
                    "2001:db8::1"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("valid")
                        .octets(),
                    d.octets(),
                    args.ttl,
                ),
                _ => {
                    return Err(ClientError::Refused(
                        "--src-ip and --dst-ip must be of one family".into(),
                    ));
                }
            };
            match (args.proto.as_str(), dst) {
                ("udp", _) => ip
                    .udp(args.sport, args.dport)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                ("tcp", _) => ip
                    .tcp(args.sport, args.dport, 1, 65535)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                ("icmp", std::net::IpAddr::V4(_)) => ip
                    .icmpv4_echo_request(1, 1)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                ("icmp", std::net::IpAddr::V6(_)) => ip
                    .icmpv6_echo_request(1, 1)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                (other, _) => {
                    return Err(ClientError::Refused(format!(
                        "--proto {other:?}: use udp, tcp or icmp"
                    )));
                }
            }
        }
    }
    if let Some(vlan) = args.vlan {
        if vlan > 4094 {
            return Err(ClientError::Refused(format!(
                "--vlan {vlan} is out of range 0..4094"
            )));
        }
        let tci = (vlan & 0xfff).to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, tci[0], tci[1]]);
    }
    Ok(frame)
}

fn render_trace(t: &TraceView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10}{v}\n"));
    line(
        "ingress",
        match t.vlan {
            Some(v) => format!("{} (VLAN {v})", t.ingress),
            None => t.ingress.clone(),
        },
    );
    let verdict = match t.verdict {
        Verdict::Forward | Verdict::Route => format!(
            "{}: out of {} {}",
            t.verdict,
            t.egress.clone().unwrap_or_default(),
            t.egress_tagging.clone().unwrap_or_default()
        ),
        Verdict::Flood => format!(
            "flood in VLAN {} to {}",
            t.vlan.unwrap_or(0),
            if t.flood.is_empty() {
                "no other port".into()
            } else {
                t.flood
                    .iter()
                    .map(|p| format!("{} ({})", p.port, p.tagging))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        Verdict::Drop => format!("drop: {}", t.drop_reason.clone().unwrap_or_default()),
        Verdict::Punt => format!(
            "punt to the kernel ({}) through {}",
            t.punt_reason.clone().unwrap_or_default(),
            t.egress.clone().unwrap_or_default()
        ),
        Verdict::ToKernel => "to the kernel (not switched or routed)".into(),
        Verdict::Unknown => t.verdict.to_string(),
    };
    line("verdict", format!("{verdict}  [XDP {}]", t.action));
    if let Some(e) = &t.fdb_entry {
        line("fdb", e.clone());
    }
    if let Some(r) = &t.route {
        line("route", r.clone());
    }
    if let Some(n) = &t.nexthop {
        line("nexthop", n.clone());
    }
    if let Some(n) = t.neighbor {
        line("neighbor", n.to_string());
    }
    if !t.rewrites.is_empty() {
        line("rewrites", t.rewrites.join("; "));
    }
    out
}
