//! `xnos show`: the views of the switch state as tables.

use ipnet::IpNet;
use serde_json::Value;
use xnos::{
    api::{
        Client, ClientError, FdbView, InterfaceView, NeighborView, PortView, RouteView, RoutesView,
        RowView, VlanView,
    },
    statedb::{DatapathMode, Hardware, LearnedBy, RouteTable},
};
use xnos_common::FDB_SIZE;

use crate::{
    args::{Show, ShowFormat},
    counters,
    render::{Cell, Column, json_rows, note, table},
};

pub async fn run(client: &Client, table: Show) -> Result<(), ClientError> {
    match table {
        Show::Ports(f) => {
            let ports: Vec<PortView> = client.get("/v1/ports").await?;
            print(f, &port_columns(), &ports, || port_notes(&ports));
        }
        Show::Vlans(f) => {
            let vlans: Vec<VlanView> = client.get("/v1/vlans").await?;
            print(f, &vlan_columns(), &vlans, String::new);
        }
        Show::Fdb(f) => {
            let fdb: Vec<FdbView> = client.get("/v1/fdb").await?;
            let ports: Vec<PortView> = if f.json {
                Vec::new()
            } else {
                client.get("/v1/ports").await?
            };
            print(f, &fdb_columns(), &fdb, || fdb_notes(&fdb, &ports));
        }
        Show::Modules(f) => {
            let modules: Vec<RowView> = client.get("/v1/modules").await?;
            print(f, &module_columns(), &modules, String::new);
        }
        Show::Interfaces(f) => {
            let ifaces: Vec<InterfaceView> = client.get("/v1/interfaces").await?;
            print(f, &interface_columns(), &ifaces, || {
                ifaces
                    .iter()
                    .filter_map(|i| i.error.as_ref().map(|e| note(&i.name, e)))
                    .collect()
            });
        }
        Show::Routes(args) => {
            let mut view: RoutesView = client.get("/v1/routes").await?;
            if !args.all {
                view.routes.retain(|r| !hidden_route(r));
            }
            print(args.format, &route_columns(), &view.routes, || {
                route_notes(&view)
            });
        }
        Show::Neighbors(f) => {
            let neighbors: Vec<NeighborView> = client.get("/v1/neighbors").await?;
            print(f, &neighbor_columns(), &neighbors, || {
                neighbors
                    .iter()
                    .filter_map(|n| {
                        let subject = format!("{} ({})", n.ip, n.interface);
                        n.fast_path_error.as_ref().map(|e| note(&subject, e))
                    })
                    .collect()
            });
        }
        Show::Counters(args) => counters::run(client, args).await?,
    }
    Ok(())
}

/// Prints the rows as JSON, or as a table followed by the `notes` about it.
fn print<T>(format: ShowFormat, columns: &[Column<T>], rows: &[T], notes: impl FnOnce() -> String) {
    if format.json {
        let json = json_rows(columns, rows);
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
    } else {
        print!("{}{}", table(columns, rows, format.wide), notes());
    }
}

fn port_columns() -> Vec<Column<PortView>> {
    vec![
        Column::new("PORT", |p: &PortView| Cell::text(&p.name)).elide(8),
        Column::new("MODE", |p: &PortView| Cell::text(p.mode)),
        Column::new("UNTAGGED", |p: &PortView| Cell::id(p.untagged_vlan)),
        Column::new("TAGGED", |p: &PortView| Cell::Vlans(p.tagged_vlans.clone())).elide(10),
        Column::new("DATAPATH", |p: &PortView| Cell::text(p.datapath)),
        Column::new("LINK", |p: &PortView| {
            Cell::text(p.link.map_or("absent".into(), |l| l.to_string()))
        }),
        Column::new("DROPS", |p: &PortView| {
            Cell::Count(p.counters.total_drops())
        }),
        Column::new("RX-PACKETS", |p: &PortView| {
            Cell::Count(p.counters.rx_packets)
        })
        .wide(),
        Column::new("TX-PACKETS", |p: &PortView| {
            Cell::Count(p.counters.tx_packets)
        })
        .wide(),
        Column::new("RX-BYTES", |p: &PortView| Cell::Count(p.counters.rx_bytes)).wide(),
        Column::new("TX-BYTES", |p: &PortView| Cell::Count(p.counters.tx_bytes)).wide(),
        Column::new("FLOODED", |p: &PortView| Cell::Count(p.counters.flooded)).wide(),
        Column::new("TO-KERNEL", |p: &PortView| {
            Cell::Count(p.counters.to_kernel)
        })
        .wide(),
        Column::new("PUNTED", |p: &PortView| Cell::Count(p.counters.punted)).wide(),
        Column::new("LEARNED", |p: &PortView| Cell::Count(p.counters.learned)).wide(),
        Column::new("LEARN-REFUSED", |p: &PortView| {
            Cell::Count(p.counters.learn_refused)
        })
        .wide(),
        Column::new("LEARN-EVENTS-LOST", |p: &PortView| {
            Cell::Count(p.counters.learn_events_lost)
        })
        .wide(),
        Column::new("DROP-REASONS", |p: &PortView| {
            Cell::Counts(p.counters.drops.clone())
        })
        .wide(),
        Column::new("IFINDEX", |p: &PortView| Cell::Id(p.ifindex.into())).wide(),
        Column::new("DATAPATH-REASON", |p: &PortView| {
            Cell::maybe(p.datapath_reason.as_ref())
        })
        .wide(),
        Column::new("XDP-FEATURES", |p: &PortView| {
            Cell::maybe(p.xdp_features.as_ref())
        })
        .wide(),
        Column::new("XDP-REDIRECT-TARGET", |p: &PortView| {
            p.xdp_redirect_target.map_or(Cell::Absent, Cell::Bool)
        })
        .wide(),
        Column::new("BRIDGE", |p: &PortView| Cell::maybe(p.bridge.as_ref())).wide(),
        Column::new("BRIDGE-MEMBER", |p: &PortView| {
            p.bridge_member.map_or(Cell::Absent, Cell::Bool)
        })
        .wide(),
        Column::new("ERROR", |p: &PortView| Cell::maybe(p.error.as_ref())).wide(),
    ]
}

/// What the table cannot say in a cell: errors, why a port is not on native XDP, and
/// the drops by reason.
/// How full the FDB map is, and the new MACs it refused (per port) when there are any.
fn fdb_notes(fdb: &[FdbView], ports: &[PortView]) -> String {
    let n = fdb.len();
    let mut out = format!("{n} {}\n", if n == 1 { "entry" } else { "entries" });
    // The kernel bridge's entries are not in the fast path's map.
    let in_map = fdb
        .iter()
        .filter(|f| f.learned_by != Some(LearnedBy::Bridge))
        .count();
    out.push_str(&format!(
        "fast-path FDB: {in_map} of {FDB_SIZE} entries in use{}\n",
        if in_map >= FDB_SIZE as usize {
            " (full)"
        } else {
            ""
        }
    ));
    let refused: Vec<String> = ports
        .iter()
        .filter(|p| p.counters.learn_refused > 0)
        .map(|p| format!("{} {}", p.name, p.counters.learn_refused))
        .collect();
    if !refused.is_empty() {
        let total: u64 = ports.iter().map(|p| p.counters.learn_refused).sum();
        out.push_str(&note(
            &format!("{total} new MACs refused (no room to learn them)"),
            &refused.join(", "),
        ));
    }
    out
}

fn port_notes(ports: &[PortView]) -> String {
    let mut out = String::new();
    for p in ports {
        if let Some(error) = &p.error {
            out.push_str(&note(&p.name, error));
        }
        if let (Some(bridge), Some(member)) = (&p.bridge, p.bridge_member) {
            let state = if member { "member of" } else { "NOT in" };
            out.push_str(&note(&p.name, &format!("{state} bridge {bridge}")));
        }
        if p.datapath != DatapathMode::XdpNative
            && let Some(reason) = &p.datapath_reason
        {
            out.push_str(&note(&p.name, &format!("{}, {reason}", p.datapath)));
        }
        if p.xdp_redirect_target == Some(false)
            && ports
                .iter()
                .any(|other| other.datapath == DatapathMode::XdpNative)
        {
            out.push_str(&note(
                &p.name,
                &format!(
                    "warning: native-XDP ports cannot send it frames (xdp-features: {}); \
                     on a veth, turn GRO on at its peer",
                    p.xdp_features.as_deref().unwrap_or("none"),
                ),
            ));
        }
        if p.counters.total_drops() > 0 {
            let drops = Cell::Counts(p.counters.drops.clone()).show();
            out.push_str(&note(&format!("{} drops", p.name), &drops));
        }
    }
    out
}

fn vlan_columns() -> Vec<Column<VlanView>> {
    vec![
        Column::new("VLAN", |v: &VlanView| Cell::Id(v.id.into())),
        Column::new("NAME", |v: &VlanView| Cell::maybe(v.name.as_ref())).elide(12),
        Column::new("UNTAGGED", |v: &VlanView| Cell::list(&v.untagged_ports)).elide(16),
        Column::new("TAGGED", |v: &VlanView| Cell::list(&v.tagged_ports)).elide(16),
        Column::new("FDB", |v: &VlanView| Cell::Count(v.fdb_entries as u64)),
    ]
}

fn fdb_columns() -> Vec<Column<FdbView>> {
    vec![
        Column::new("VLAN", |f: &FdbView| Cell::Id(f.vlan.into())),
        Column::new("MAC", |f: &FdbView| Cell::text(f.mac)),
        Column::new("PORT", |f: &FdbView| Cell::text(&f.port)).elide(10),
        Column::new("TYPE", |f: &FdbView| Cell::text(f.kind)),
        Column::new("LEARNED-BY", |f: &FdbView| Cell::maybe(f.learned_by)),
        Column::new("MOVES", |f: &FdbView| Cell::Count(f.moves)),
        Column::new("HW", |f: &FdbView| {
            Cell::maybe(f.hardware.then_some("offloaded"))
        }),
    ]
}

fn interface_columns() -> Vec<Column<InterfaceView>> {
    vec![
        Column::new("INTERFACE", |i: &InterfaceView| Cell::text(&i.name)).elide(10),
        Column::new("KIND", |i: &InterfaceView| Cell::text(i.kind)),
        Column::new("VLAN", |i: &InterfaceView| Cell::id(i.vlan)),
        Column::new("PORT", |i: &InterfaceView| Cell::maybe(i.port.as_ref())).elide(10),
        Column::new("LINK", |i: &InterfaceView| {
            Cell::text(i.link.map_or("absent".into(), |l| l.to_string()))
        }),
        Column::new("ADDRESSES", |i: &InterfaceView| Cell::list(&i.addresses)).elide(20),
        Column::new("MAC", |i: &InterfaceView| Cell::text(i.mac)).wide(),
        Column::new("IFINDEX", |i: &InterfaceView| Cell::Id(i.ifindex.into())).wide(),
        Column::new("ERROR", |i: &InterfaceView| Cell::maybe(i.error.as_ref())).wide(),
    ]
}

fn route_nexthops(r: &RouteView) -> Vec<String> {
    r.nexthops
        .iter()
        .map(|n| match n.gateway {
            // A config route the kernel refused has no interface yet.
            Some(gw) if n.interface.is_empty() => format!("via {gw}"),
            Some(gw) => format!("via {gw} dev {}", n.interface),
            None => format!("dev {}", n.interface),
        })
        .collect()
}

fn route_columns() -> Vec<Column<RouteView>> {
    vec![
        Column::new("PREFIX", |r: &RouteView| Cell::Prefix(r.prefix.to_string())).elide(18),
        // Without --all every row is of the main table; the local table's rows say `local`
        // in TYPE.
        Column::new("TABLE", |r: &RouteView| Cell::text(r.table)).wide(),
        Column::new("METRIC", |r: &RouteView| Cell::Count(r.metric.into())),
        Column::new("TYPE", |r: &RouteView| Cell::text(r.kind)),
        Column::new("PROTO", |r: &RouteView| Cell::text(r.protocol)),
        Column::new("NEXTHOPS", |r: &RouteView| Cell::List(route_nexthops(r))).elide(24),
        Column::new("FAST-PATH", |r: &RouteView| Cell::Bool(r.fast_path)),
        Column::new("HW", |r: &RouteView| Cell::maybe(r.hardware)).wide(),
        Column::new("FAST-PATH-ACTION", |r: &RouteView| {
            Cell::maybe(r.fast_path_action)
        })
        .wide(),
        Column::new("FAST-PATH-ERROR", |r: &RouteView| {
            Cell::maybe(r.fast_path_error.as_ref())
        })
        .wide(),
        Column::new("ERROR", |r: &RouteView| Cell::maybe(r.error.as_ref())).wide(),
    ]
}

/// Each route the fast path or the switch ASIC failed to take, then the L3 counters (in `GET /v1/routes`
/// and the metrics for programs).
/// Without --all, `show routes` leaves out what an operator does not route by: the local
/// table and link-local prefixes (fe80::/10, 169.254.0.0/16), in the table and JSON alike.
fn hidden_route(r: &RouteView) -> bool {
    const LINK_LOCAL: [&str; 2] = ["fe80::/10", "169.254.0.0/16"];
    r.table == RouteTable::Local
        || LINK_LOCAL
            .iter()
            .filter_map(|net| net.parse::<IpNet>().ok())
            .any(|net| net.contains(&r.prefix))
}

fn route_notes(view: &RoutesView) -> String {
    let mut out = String::new();
    for r in &view.routes {
        let subject = format!("{} ({})", r.prefix, r.table);
        if let Some(error) = &r.error {
            out.push_str(&note(&format!("{} (config route)", r.prefix), error));
        }
        if let Some(error) = &r.fast_path_error {
            out.push_str(&note(&subject, error));
        }
        if r.hardware == Some(Hardware::OffloadFailed) {
            out.push_str(&note(
                &subject,
                "the switch ASIC failed to take it (offload-failed)",
            ));
        }
    }
    let c = &view.counters;
    let punts = Cell::Counts(c.punts.clone()).show();
    out.push_str(&format!(
        "routed by the fast path: {} IPv4, {} IPv6; punted to the kernel: {}{}\n",
        c.routed_v4,
        c.routed_v6,
        if punts == "-" { "none" } else { &punts },
        if c.punts_rate_limited > 0 {
            format!(" (rate-limited: {})", c.punts_rate_limited)
        } else {
            String::new()
        },
    ));
    out
}

fn neighbor_columns() -> Vec<Column<NeighborView>> {
    vec![
        Column::new("ADDRESS", |n: &NeighborView| Cell::text(n.ip)).elide(25),
        Column::new("MAC", |n: &NeighborView| Cell::maybe(n.mac)),
        Column::new("INTERFACE", |n: &NeighborView| Cell::text(&n.interface)).elide(10),
        Column::new("STATE", |n: &NeighborView| Cell::text(n.state)),
        Column::new("FAST-PATH", |n: &NeighborView| Cell::Bool(n.fast_path)),
        Column::new("FAST-PATH-ERROR", |n: &NeighborView| {
            Cell::maybe(n.fast_path_error.as_ref())
        })
        .wide(),
    ]
}

fn module_columns() -> Vec<Column<RowView>> {
    fn field(m: &RowView, name: &str) -> Cell {
        match &m.row[name] {
            Value::String(s) => Cell::text(s),
            Value::Number(n) => n.as_u64().map_or(Cell::text(n), Cell::Count),
            Value::Null => Cell::Absent,
            other => Cell::text(other),
        }
    }
    vec![
        Column::new("MODULE", |m: &RowView| Cell::text(&m.key)),
        Column::new("STATE", |m: &RowView| field(m, "state")),
        Column::new("RESTARTS", |m: &RowView| field(m, "restarts")),
        Column::new("LAST-ERROR", |m: &RowView| field(m, "last-error")).elide(20),
    ]
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
                "flooded": 1, "to-kernel": 0, "punted": 0, "learned": 1, "learn-refused": 0,
                "drops": {"vlan-not-allowed": 0, "no-egress": 0},
            },
        });
        for (key, value) in extra.as_object().expect("an object") {
            view[key] = value.clone();
        }
        serde_json::from_value(view).expect("a port view")
    }

    /// One of each view, with long names and a port in 40 VLANs: what the width tests
    /// render.
    fn long_ports() -> Vec<PortView> {
        vec![
            port("swp1", json!({})),
            port(
                "enp0s31f6-uplink-to-core",
                json!({
                    "mode": "trunk",
                    "untagged-vlan": 1,
                    "tagged-vlans": (100..120).chain((200..240).step_by(2)).collect::<Vec<u16>>(),
                    "datapath": "xdp-generic",
                    "link": "lower-layer-down",
                    "datapath-reason": "the driver has no native XDP",
                    "counters": {
                        "rx-packets": 123_456_789, "rx-bytes": 500, "tx-packets": 4,
                        "tx-bytes": 400, "flooded": 1, "to-kernel": 0, "punted": 0, "learned": 1, "learn-refused": 0,
                        "drops": {"vlan-not-allowed": 1_234_567, "no-egress": 0},
                    },
                }),
            ),
        ]
    }

    fn view<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).expect("a view")
    }

    fn long_vlans() -> Vec<VlanView> {
        let ports: Vec<String> = (1..=40).map(|i| format!("swp{i}")).collect();
        vec![view(json!({
            "id": 100, "name": "storage-network-of-the-third-floor",
            "untagged-ports": ports[..20], "tagged-ports": ports[20..], "fdb-entries": 3,
        }))]
    }

    fn long_fdb() -> Vec<FdbView> {
        vec![view(json!({
            "vlan": 4094, "mac": "02:00:00:00:00:10", "port": "enp0s31f6-uplink-to-core",
            "kind": "learned", "moves": 12345, "learned-by": "bridge", "hardware": true,
        }))]
    }

    fn long_interfaces() -> Vec<InterfaceView> {
        vec![view(json!({
            "name": "vlan4094", "kind": "svi", "vlan": 4094, "port": "vlan4094i",
            "addresses": ["10.0.10.1/24", "2001:db8:10:20:30:40:50:1/64", "192.0.2.1/28"],
            "mac": "02:00:00:00:00:01", "ifindex": 12, "link": "lower-layer-down",
            "error": "setting the MTU failed",
        }))]
    }

    fn long_routes() -> RoutesView {
        view(json!({
            "routes": [{
                "prefix": "2001:db8:1234:5678:9abc:def0:1234:0/112", "table": "local", "metric": 1024,
                "kind": "unicast", "protocol": "static",
                "nexthops": [
                    {"gateway": "2001:db8:10:20:30:40:50:2", "interface": "vlan4094"},
                    {"gateway": "2001:db8:10:20:30:40:50:3", "interface": "vlan4094"},
                ],
                "fast-path": false, "fast-path-action": null,
                "fast-path-error": "map ROUTES6: full", "hardware": "offload-failed",
                "error": "installing route: Network is unreachable (os error 101)",
            }],
            "counters": {"routed-v4": 1, "routed-v6": 2, "punts": {}, "punts-rate-limited": 0},
        }))
    }

    fn long_neighbors() -> Vec<NeighborView> {
        vec![view(json!({
            "ip": "fe80::1234:5678:9abc:def0", "mac": "02:00:00:00:00:02",
            "interface": "enp0s31f6-uplink-to-core", "state": "reachable",
            "fast-path": false, "fast-path-error": "map NEIGHBORS: full",
        }))]
    }

    fn long_modules() -> Vec<RowView> {
        vec![RowView {
            key: "kernel".into(),
            row: json!({"state": "restarting", "restarts": 7,
                "last-error": "installing route 10.99.0.0/16 via 10.0.30.2: Network is unreachable (os error 101)"}),
        }]
    }

    /// Every show table's text (default, then --wide) and JSON.
    fn every_table() -> Vec<(&'static str, String, String, Value)> {
        fn all<T>(
            name: &'static str,
            columns: Vec<Column<T>>,
            rows: &[T],
        ) -> (&'static str, String, String, Value) {
            (
                name,
                table(&columns, rows, false),
                table(&columns, rows, true),
                serde_json::to_value(json_rows(&columns, rows)).unwrap(),
            )
        }
        let routes = long_routes();
        vec![
            all("ports", port_columns(), &long_ports()),
            all("vlans", vlan_columns(), &long_vlans()),
            all("fdb", fdb_columns(), &long_fdb()),
            all("interfaces", interface_columns(), &long_interfaces()),
            all("routes", route_columns(), &routes.routes),
            all("neighbors", neighbor_columns(), &long_neighbors()),
            all("modules", module_columns(), &long_modules()),
            all("counters", counters::columns(), &counters::sample_rows()),
        ]
    }

    // What this shows: `--json` and the table come from one column list: the keys of
    // every JSON row are the --wide table's headers in lower case, no more, no fewer.
    #[test]
    fn every_table_header_is_its_json_key() {
        for (name, _, wide, json) in every_table() {
            let headers: Vec<String> = wide
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .map(str::to_lowercase)
                .collect();
            let mut sorted = headers.clone();
            sorted.sort();
            for row in json.as_array().unwrap() {
                let keys: Vec<String> = row.as_object().unwrap().keys().cloned().collect();
                assert_eq!(keys, sorted, "show {name}: {wide}");
            }
        }
    }

    #[test]
    fn default_tables_fit_80_columns_and_wide_keeps_everything() {
        for (name, default, wide, _) in every_table() {
            for line in default.lines() {
                assert!(
                    line.chars().count() <= 80,
                    "show {name}: {line:?}\n{default}"
                );
            }
            assert!(!wide.contains('…'), "show {name} --wide elided:\n{wide}");
        }
        let ports = table(&port_columns(), &long_ports(), true);
        assert!(ports.contains("enp0s31f6-uplink-to-core  trunk"), "{ports}");
        assert!(ports.contains(" 100-119,200,202,"), "{ports}");
        assert!(ports.contains(",236,238 "), "{ports}");
        let default = table(&port_columns(), &long_ports(), false);
        // Cut after a whole VLAN or range, never inside one.
        assert!(default.contains(" 100-119,…"), "{default}");
        let routes = table(&route_columns(), &long_routes().routes, true);
        assert!(
            routes.contains("via 2001:db8:10:20:30:40:50:3 dev vlan4094"),
            "{routes}"
        );
        // A prefix is cut in its address: its length stays.
        let routes = table(&route_columns(), &long_routes().routes, false);
        assert!(routes.contains("\n2001:db8:1234…/112  "), "{routes}");
    }

    #[test]
    fn json_values_are_typed() {
        let json = serde_json::to_value(json_rows(&port_columns(), &long_ports())).unwrap();
        let trunk = &json[1];
        assert_eq!(trunk["port"], "enp0s31f6-uplink-to-core");
        assert_eq!(trunk["untagged"], 1);
        assert_eq!(trunk["tagged"].as_array().unwrap().len(), 40);
        assert_eq!(trunk["rx-packets"], 123_456_789);
        assert_eq!(trunk["drop-reasons"]["vlan-not-allowed"], 1_234_567);
        assert_eq!(trunk["bridge"], Value::Null);
        let json =
            serde_json::to_value(json_rows(&route_columns(), &long_routes().routes)).unwrap();
        assert_eq!(json[0]["fast-path"], false);
        assert_eq!(json[0]["nexthops"].as_array().unwrap().len(), 2);
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
                        "flooded": 0, "to-kernel": 0, "punted": 0, "learned": 0, "learn-refused": 0,
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
            format!(
                "{}{}",
                table(&port_columns(), &ports, false),
                port_notes(&ports)
            ),
            "\
PORT  MODE    UNTAGGED  TAGGED  DATAPATH    LINK  DROPS
swp1  access  10        -       xdp-native  up        0
swp2  trunk   -         10,20   tc          up        3
swp3  access  10        -       none        down      0
swp2: tc, configured: datapath = \"tc\"
swp2: warning: native-XDP ports cannot send it frames (xdp-features: basic); on
    a veth, turn GRO on at its peer
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
            table(&module_columns(), &modules, false),
            "MODULE  STATE    RESTARTS  LAST-ERROR\nkernel  running         2  -\n"
        );
    }
}
