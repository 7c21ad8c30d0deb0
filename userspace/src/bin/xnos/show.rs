//! `xnos show`: the views of the switch state as tables.

use ipnet::IpNet;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use xnos::{
    api::{
        Client, ClientError, FdbView, InterfaceView, NeighborView, PortView, RouteView, RoutesView,
        RowView, VlanView,
    },
    statedb::{DatapathMode, LearnedBy, RouteTable},
};

use crate::{
    args::{Format, RoutesArgs, Show},
    counters,
    render::table,
};

pub async fn run(client: &Client, table: Show) -> Result<(), ClientError> {
    match table {
        Show::Ports(f) => show(client, "/v1/ports", f, render_ports).await,
        Show::Vlans(f) => show(client, "/v1/vlans", f, render_vlans).await,
        Show::Fdb(f) => show(client, "/v1/fdb", f, render_fdb).await,
        Show::Modules(f) => show(client, "/v1/modules", f, render_modules).await,
        Show::Interfaces(f) => show(client, "/v1/interfaces", f, render_interfaces).await,
        Show::Routes(args) => routes(client, args).await,
        Show::Neighbors(f) => show(client, "/v1/neighbors", f, render_neighbors).await,
        Show::Counters(args) => counters::run(client, args).await,
    }
}

async fn show<T: DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    format: Format,
    render: impl FnOnce(&T) -> String,
) -> Result<(), ClientError> {
    let value: T = client.get(path).await?;
    if format.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("views serialise")
        );
    } else {
        print!("{}", render(&value));
    }
    Ok(())
}

fn vlan_list(vlans: &[u16]) -> String {
    if vlans.is_empty() {
        return "-".into();
    }
    vlans
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn render_ports(ports: &Vec<PortView>) -> String {
    let mut rows = vec![
        [
            "PORT", "MODE", "UNTAGGED", "TAGGED", "DATAPATH", "LINK", "RX-PKTS", "TX-PKTS",
            "FLOODED", "DROPS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in ports {
        rows.push(vec![
            p.name.clone(),
            p.mode.to_string(),
            p.untagged_vlan.map_or("-".into(), |v| v.to_string()),
            vlan_list(&p.tagged_vlans),
            p.datapath.to_string(),
            p.link.map_or("absent".into(), |l| l.to_string()),
            p.counters.rx_packets.to_string(),
            p.counters.tx_packets.to_string(),
            p.counters.flooded.to_string(),
            p.counters.total_drops().to_string(),
        ]);
    }
    let mut out = table(&rows);
    for p in ports {
        if let Some(error) = &p.error {
            out.push_str(&format!("{}: {error}\n", p.name));
        }
        if let (Some(bridge), Some(member)) = (&p.bridge, p.bridge_member) {
            let state = if member { "member of" } else { "NOT in" };
            out.push_str(&format!("{}: {state} bridge {bridge}\n", p.name));
        }
        if p.datapath != DatapathMode::XdpNative
            && let Some(reason) = &p.datapath_reason
        {
            out.push_str(&format!("{}: {}, {reason}\n", p.name, p.datapath));
        }
        if p.xdp_redirect_target == Some(false)
            && ports
                .iter()
                .any(|other| other.datapath == DatapathMode::XdpNative)
        {
            out.push_str(&format!(
                "{}: warning: native-XDP ports cannot send it frames (xdp-features: {}); \
                 on a veth, turn GRO on at its peer\n",
                p.name,
                p.xdp_features.as_deref().unwrap_or("none"),
            ));
        }
        let drops: Vec<String> = p
            .counters
            .drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        if !drops.is_empty() {
            out.push_str(&format!("{} drops: {}\n", p.name, drops.join(" ")));
        }
    }
    out
}

fn render_vlans(vlans: &Vec<VlanView>) -> String {
    let mut rows = vec![
        ["VLAN", "NAME", "UNTAGGED", "TAGGED", "FDB"]
            .map(String::from)
            .to_vec(),
    ];
    for v in vlans {
        let ports = |list: &[String]| {
            if list.is_empty() {
                "-".into()
            } else {
                list.join(",")
            }
        };
        rows.push(vec![
            v.id.to_string(),
            v.name.clone().unwrap_or_else(|| "-".into()),
            ports(&v.untagged_ports),
            ports(&v.tagged_ports),
            v.fdb_entries.to_string(),
        ]);
    }
    table(&rows)
}

fn render_fdb(fdb: &Vec<FdbView>) -> String {
    let mut rows = vec![
        ["VLAN", "MAC", "PORT", "TYPE", "MOVES", "HW"]
            .map(String::from)
            .to_vec(),
    ];
    for f in fdb {
        let kind = match f.learned_by {
            Some(LearnedBy::Bridge) => format!("{} (bridge)", f.kind),
            _ => f.kind.to_string(),
        };
        rows.push(vec![
            f.vlan.to_string(),
            f.mac.to_string(),
            f.port.clone(),
            kind,
            f.moves.to_string(),
            if f.hardware { "offloaded" } else { "-" }.into(),
        ]);
    }
    let mut out = table(&rows);
    let n = fdb.len();
    out.push_str(&format!(
        "{n} {}\n",
        if n == 1 { "entry" } else { "entries" }
    ));
    out
}

fn render_interfaces(ifaces: &Vec<InterfaceView>) -> String {
    let mut rows = vec![
        [
            "INTERFACE",
            "KIND",
            "VLAN",
            "PORT",
            "LINK",
            "MAC",
            "ADDRESSES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut errors = String::new();
    for i in ifaces {
        if let Some(error) = &i.error {
            errors.push_str(&format!("{}: {error}\n", i.name));
        }
        rows.push(vec![
            i.name.clone(),
            i.kind.to_string(),
            i.vlan.map_or("-".into(), |v| v.to_string()),
            i.port.clone().unwrap_or_else(|| "-".into()),
            i.link.map_or("absent".into(), |l| l.to_string()),
            i.mac.to_string(),
            i.addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&errors);
    out
}

fn route_nexthops(r: &RouteView) -> String {
    r.nexthops
        .iter()
        .map(|n| match n.gateway {
            // A refused config route has no interface.
            Some(gw) if n.interface.is_empty() => format!("via {gw}"),
            Some(gw) => format!("via {gw} dev {}", n.interface),
            None => format!("dev {}", n.interface),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `show routes`: without --all, the routes an operator routes by (no local-table or
/// link-local routes), in the table and in JSON alike.
async fn routes(client: &Client, args: RoutesArgs) -> Result<(), ClientError> {
    let mut view: RoutesView = client.get("/v1/routes").await?;
    if !args.all {
        view.routes.retain(|r| !hidden_route(r));
    }
    if args.format.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).expect("views serialise")
        );
    } else {
        print!("{}", render_routes(&view));
    }
    Ok(())
}

fn hidden_route(r: &RouteView) -> bool {
    const LINK_LOCAL: [&str; 2] = ["fe80::/10", "169.254.0.0/16"];
    r.table == RouteTable::Local
        || LINK_LOCAL
            .iter()
            .filter_map(|net| net.parse::<IpNet>().ok())
            .any(|net| net.contains(&r.prefix))
}

fn render_routes(view: &RoutesView) -> String {
    let mut rows = vec![
        [
            "PREFIX",
            "TABLE",
            "METRIC",
            "TYPE",
            "PROTO",
            "NEXTHOPS",
            "FAST-PATH",
            "HW",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &view.routes {
        rows.push(vec![
            r.prefix.to_string(),
            r.table.to_string(),
            r.metric.to_string(),
            r.kind.to_string(),
            r.protocol.to_string(),
            route_nexthops(r),
            match (r.fast_path, &r.fast_path_error) {
                _ if r.error.is_some() => "no (refused)",
                (_, Some(_)) => "no (error)",
                (true, None) => "yes",
                (false, None) => "no (kernel)",
            }
            .into(),
            r.hardware.map_or("-".into(), |h| h.to_string()),
        ]);
    }
    let mut out = table(&rows);
    for r in &view.routes {
        if let Some(error) = &r.error {
            out.push_str(&format!("{} (config route): {error}\n", r.prefix));
        }
        if let Some(error) = &r.fast_path_error {
            out.push_str(&format!("{} ({}): {error}\n", r.prefix, r.table));
        }
    }
    let c = &view.counters;
    let punts: Vec<String> = c
        .punts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    out.push_str(&format!(
        "routed by the fast path: {} IPv4, {} IPv6; punted to the kernel: {}{}\n",
        c.routed_v4,
        c.routed_v6,
        if punts.is_empty() {
            "none".to_string()
        } else {
            punts.join(" ")
        },
        if c.punts_rate_limited > 0 {
            format!(" (rate-limited: {})", c.punts_rate_limited)
        } else {
            String::new()
        },
    ));
    out
}

fn render_neighbors(neighbors: &Vec<NeighborView>) -> String {
    let mut rows = vec![
        ["ADDRESS", "MAC", "INTERFACE", "STATE", "FAST-PATH"]
            .map(String::from)
            .to_vec(),
    ];
    for n in neighbors {
        rows.push(vec![
            n.ip.to_string(),
            n.mac.map_or("-".into(), |m| m.to_string()),
            n.interface.clone(),
            n.state.to_string(),
            match (n.fast_path, &n.fast_path_error) {
                (_, Some(_)) => "no (error)",
                (true, None) => "yes",
                (false, None) => "no",
            }
            .into(),
        ]);
    }
    let mut out = table(&rows);
    for n in neighbors {
        if let Some(error) = &n.fast_path_error {
            out.push_str(&format!("{} ({}): {error}\n", n.ip, n.interface));
        }
    }
    out
}

fn render_modules(modules: &Vec<RowView>) -> String {
    let mut rows = vec![
        ["MODULE", "STATE", "RESTARTS", "LAST-ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for m in modules {
        let field = |name: &str| match &m.row[name] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        rows.push(vec![
            m.key.clone(),
            field("state"),
            field("restarts"),
            field("last-error"),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A port as `GET /v1/ports` sends it; fields left out are absent (None).
    fn port(name: &str, extra: Value) -> PortView {
        let mut view = json!({
            "name": name,
            "ifindex": 2,
            "mode": "access",
            "untagged-vlan": 10,
            "tagged-vlans": [],
            "datapath": "xdp-native",
            "link": "up",
            "counters": {
                "rx-packets": 5, "rx-bytes": 500, "tx-packets": 4, "tx-bytes": 400,
                "flooded": 1, "to-kernel": 0, "learned": 1,
                "drops": {"vlan-not-allowed": 0, "no-egress": 0},
            },
        });
        for (key, value) in extra.as_object().expect("an object") {
            view[key] = value.clone();
        }
        serde_json::from_value(view).expect("a port view")
    }

    #[test]
    fn ports_table_then_one_line_per_thing_to_know() {
        let ports = vec![
            port("swp1", json!({})),
            port(
                "swp2",
                json!({
                    "mode": "trunk",
                    "untagged-vlan": null,
                    "tagged-vlans": [10, 20],
                    "datapath": "tc",
                    "datapath-reason": "configured: datapath = \"tc\"",
                    "xdp-redirect-target": false,
                    "xdp-features": "basic",
                    "counters": {
                        "rx-packets": 0, "rx-bytes": 0, "tx-packets": 0, "tx-bytes": 0,
                        "flooded": 0, "to-kernel": 0, "learned": 0,
                        "drops": {"vlan-not-allowed": 3, "no-egress": 0},
                    },
                }),
            ),
            port(
                "swp3",
                json!({"datapath": "none", "link": "down", "error": "no such interface"}),
            ),
        ];
        assert_eq!(
            render_ports(&ports),
            "\
PORT  MODE    UNTAGGED  TAGGED  DATAPATH    LINK  RX-PKTS  TX-PKTS  FLOODED  DROPS
swp1  access  10        -       xdp-native  up    5        4        1        0
swp2  trunk   -         10,20   tc          up    0        0        0        3
swp3  access  10        -       none        down  5        4        1        0
swp2: tc, configured: datapath = \"tc\"
swp2: warning: native-XDP ports cannot send it frames (xdp-features: basic); on a veth, turn GRO on at its peer
swp2 drops: vlan-not-allowed=3
swp3: no such interface
"
        );
    }

    #[test]
    fn modules_show_dash_for_nothing() {
        let modules = vec![RowView {
            key: "kernel".into(),
            row: json!({"name": "kernel", "state": "running", "restarts": 2, "last-error": null}),
        }];
        assert_eq!(
            render_modules(&modules),
            "MODULE  STATE    RESTARTS  LAST-ERROR\nkernel  running  2         -\n"
        );
    }
}
