//! End-to-end tests of routes: every kernel route shown, the fast path following the route
//! the kernel uses, and config routes the kernel refuses failing alone.

use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use xnos_common::{NeighEntry, NeighKey, NexthopGroup};
use xnos_tests::{
    Config, Daemon, Topology, find_by, format_mac, nexthop, nexthop_group, require_root,
};

/// swp1 in VLAN 10, swp2 and swp3 in VLAN 20, an SVI in each.
fn two_vlans() -> Config {
    Config::access_ports(&[10, 20, 20])
        .switch("router-mac", "02:00:00:00:01:00")
        .svi(10, &["10.0.10.1/24"])
        .svi(20, &["10.0.20.1/24"])
}

/// Poll `f` until it returns Some, for up to 10 seconds.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn routes(daemon: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["show", "routes", "--json"];
    full.extend_from_slice(args);
    daemon.json_raw(&full).unwrap().as_array().unwrap().clone()
}

fn kernel_restarts(daemon: &Daemon) -> u64 {
    let modules = daemon.json_raw(&["db", "get", "module", "--json"]).unwrap();
    find_by(&modules, "key", "kernel")["row"]["restarts"]
        .as_u64()
        .unwrap()
}

// What this shows: a config route whose nexthop no subnet reaches fails alone: the other
// config route is installed, the kernel module does not restart, `show routes` shows the
// error on that route; once an address puts the nexthop on a connected subnet, the route
// is installed without a restart. The CLI's `route add` refuses such a nexthop up front,
// naming the route, and takes one on a subnet only the kernel has (no xnos interface).
#[test]
fn a_route_the_kernel_refuses_fails_alone_until_its_nexthop_is_reachable() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    // A management interface xnos does not configure, without an address yet (as before
    // DHCP answered at boot).
    topo.switch.veth("mgmt0", "mgmt1").unwrap();
    topo.switch.ip(&["link", "set", "mgmt0", "up"]).unwrap();
    topo.switch.ip(&["link", "set", "mgmt1", "up"]).unwrap();
    let config = two_vlans()
        .route("10.98.0.0/16", &["10.0.20.2"])
        .route("10.99.0.0/16", &["192.0.2.5"]);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();

    let kernel_route = |prefix: &str| topo.switch.ip(&["route", "show", prefix]).unwrap();
    wait_for("the reachable config route", || {
        kernel_route("10.98.0.0/16")
            .contains("via 10.0.20.2")
            .then_some(())
    });
    let refused = wait_for("the refused route's error", || {
        routes(&daemon, &[])
            .into_iter()
            .find(|r| r["prefix"] == "10.99.0.0/16" && r["error"].is_string())
    });
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("192.0.2.5") && error.contains("unreachable"),
        "{error}"
    );
    let table = daemon.xnos(&["show", "routes"]).unwrap();
    assert!(
        table.contains("10.99.0.0/16 (config route): installing route 10.99.0.0/16 via 192.0.2.5"),
        "{table}"
    );
    assert_eq!(kernel_restarts(&daemon), 0, "{}", daemon.log());

    topo.switch
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "mgmt0"])
        .unwrap();
    wait_for("the route installed once its nexthop is reachable", || {
        kernel_route("10.99.0.0/16")
            .contains("via 192.0.2.5")
            .then_some(())
    });
    wait_for("the error cleared", || {
        let shown = find_by(
            &serde_json::Value::from(routes(&daemon, &[])),
            "prefix",
            "10.99.0.0/16",
        );
        (shown["error"].is_null() && shown["proto"] == "xnos").then_some(())
    });
    assert_eq!(kernel_restarts(&daemon), 0, "{}", daemon.log());

    // The address goes: the kernel drops the route without a word for it; it is refused
    // again, and installed again when the address is back.
    topo.switch
        .ip(&["addr", "del", "192.0.2.1/24", "dev", "mgmt0"])
        .unwrap();
    wait_for("the route refused again", || {
        routes(&daemon, &[])
            .into_iter()
            .any(|r| r["prefix"] == "10.99.0.0/16" && r["error"].is_string())
            .then_some(())
    });
    topo.switch
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "mgmt0"])
        .unwrap();
    wait_for("the route installed again", || {
        kernel_route("10.99.0.0/16")
            .contains("via 192.0.2.5")
            .then_some(())
    });

    let e = daemon
        .xnos(&["route", "add", "10.97.0.0/16", "--via", "198.51.100.9"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("route 10.97.0.0/16: nexthops: nexthop 198.51.100.9 is on no subnet"),
        "{e}"
    );
    let added = daemon
        .xnos(&["route", "add", "10.97.0.0/16", "--via", "192.0.2.7"])
        .unwrap();
    assert!(added.contains("10.97.0.0/16"), "{added}");
    wait_for("the CLI's route in the kernel", || {
        kernel_route("10.97.0.0/16")
            .contains("via 192.0.2.7")
            .then_some(())
    });
    daemon.xnos(&["route", "del", "10.97.0.0/16"]).unwrap();
    wait_for("the CLI's route gone from the kernel", || {
        kernel_route("10.97.0.0/16").trim().is_empty().then_some(())
    });
    assert_eq!(kernel_restarts(&daemon), 0, "{}", daemon.log());
}

// What this shows: `show routes --all` has every route the kernel has, fe80::/64 once per
// interface as `ip -6 route` lists it; without --all, no link-local or local-table route.
#[test]
fn show_routes_has_every_kernel_route_and_hides_link_local_ones() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    for sysctl in [
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
    ] {
        topo.switch.exec("sysctl", &["-qw", sysctl]).unwrap();
    }
    for i in 0..3 {
        let (a, b) = (format!("lla{i}"), format!("llb{i}"));
        topo.switch.veth(&a, &b).unwrap();
        for end in [&a, &b] {
            topo.switch
                .exec(
                    "sysctl",
                    &["-qw", &format!("net.ipv6.conf.{end}.disable_ipv6=0")],
                )
                .unwrap();
            topo.switch.ip(&["link", "set", end, "up"]).unwrap();
        }
    }
    let daemon = Daemon::start(&topo.switch, &two_vlans()).unwrap();
    let kernel = || {
        topo.switch
            .ip(&["-6", "route", "show", "table", "main", "fe80::/64"])
            .unwrap()
            .lines()
            .count()
    };
    let shown = wait_for("every fe80::/64 route", || {
        let count = routes(&daemon, &["--all"])
            .iter()
            .filter(|r| r["prefix"] == "fe80::/64" && r["table"] == "main")
            .count();
        (count >= 6 && count == kernel()).then_some(count)
    });
    assert!(shown >= 6, "{shown}");
    let all = routes(&daemon, &["--all"]);
    assert!(all.iter().any(|r| r["table"] == "local"));
    let default = routes(&daemon, &[]);
    assert!(
        default
            .iter()
            .all(|r| r["table"] == "main" && !r["prefix"].as_str().unwrap().starts_with("fe80:")),
        "{default:?}"
    );
    assert!(default.iter().any(|r| r["prefix"] == "10.0.20.0/24"));
}

// What this shows: of two kernel routes to one prefix with different metrics, the fast
// path forwards by the lower one (the real program says so, through `trace`), and by the
// other once the lower one is deleted; `show routes` shows both, fast path on the one used.
#[test]
fn the_fast_path_follows_the_lowest_metric() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &two_vlans()).unwrap();
    let (h2, h3) = (&topo.hosts[1], &topo.hosts[2]);
    h2.add_address("10.0.20.2/24").unwrap();
    h3.add_address("10.0.20.3/24").unwrap();
    // The switch resolves both gateways (the fast path needs their MACs).
    for gateway in ["10.0.20.2", "10.0.20.3"] {
        topo.switch
            .exec("ping", &["-c", "1", "-W", "2", gateway])
            .unwrap();
    }
    for (gateway, metric) in [("10.0.20.2", "10"), ("10.0.20.3", "20")] {
        topo.switch
            .ip(&[
                "route",
                "add",
                "10.99.0.0/16",
                "via",
                gateway,
                "metric",
                metric,
            ])
            .unwrap();
    }
    let trace = || -> serde_json::Value {
        serde_json::from_str(
            &daemon
                .xnos(&["trace", "--json", "--port", "swp1", "--dst-ip", "10.99.1.1"])
                .unwrap(),
        )
        .unwrap()
    };
    let used = |metric: u64| {
        wait_for(
            &format!("the fast path on the metric {metric} route"),
            || {
                let rows = routes(&daemon, &[]);
                let mine: Vec<_> = rows
                    .iter()
                    .filter(|r| r["prefix"] == "10.99.0.0/16")
                    .collect();
                mine.iter()
                    .any(|r| r["metric"] == metric && r["fast-path"] == true)
                    .then_some(mine.len())
            },
        )
    };
    assert_eq!(used(10), 2, "both routes shown");
    let t = trace();
    assert_eq!(
        (t["verdict"].as_str(), t["egress"].as_str()),
        (Some("route"), Some("swp2")),
        "{t}"
    );
    assert_eq!(t["neighbor"], format_mac(h2.mac), "{t}");

    topo.switch
        .ip(&[
            "route",
            "del",
            "10.99.0.0/16",
            "via",
            "10.0.20.2",
            "metric",
            "10",
        ])
        .unwrap();
    assert_eq!(used(20), 1);
    let t = trace();
    assert_eq!(
        (t["verdict"].as_str(), t["egress"].as_str()),
        (Some("route"), Some("swp3")),
        "{t}"
    );
    assert_eq!(t["neighbor"], format_mac(h3.mac), "{t}");
}

/// xnosd's BPF map `name`, found among the maps its process holds (its pins are in the
/// mount namespace of its `ip netns exec`, out of the test's sight).
fn daemon_map(daemon: &Daemon, name: &str) -> MapData {
    let pid = daemon.pid().unwrap();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) else {
            continue;
        };
        let Ok(map) = MapData::from_id(id.trim().parse().unwrap()) else {
            continue;
        };
        if map
            .info()
            .ok()
            .and_then(|i| i.name_as_str().map(|n| n == name))
            == Some(true)
        {
            return map;
        }
    }
    panic!("xnosd (pid {pid}) holds no map {name}");
}

/// The `datapath-route` rows of the prefixes `10.99.<i>.0/24`, by `i`.
fn published(daemon: &Daemon) -> std::collections::BTreeMap<u8, serde_json::Value> {
    let rows = daemon
        .json_raw(&["db", "get", "datapath-route", "--json"])
        .unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let prefix = r["key"].as_str()?.strip_prefix("main/10.99.")?;
            let i = prefix.split('.').next()?.parse().ok()?;
            Some((i, r["row"].clone()))
        })
        .collect()
}

// What this shows: routes the full nexthop-group map refuses are published with their
// error; once routes are deleted, which frees groups, the refused ones are programmed
// without any change of their own: `datapath-route` has their group and no error, and the
// map holds the group through their gateway. (The map is filled through xnosd's own map,
// so that a dozen routes find it full rather than 65,536.)
#[test]
fn routes_the_full_maps_refused_are_programmed_once_there_is_room() {
    require_root!();
    const ROOM: u8 = 6;
    const ROUTES: u8 = 12;
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &two_vlans()).unwrap();
    // The connected routes have their groups before the map is filled.
    wait_for("the connected routes programmed", || {
        let status = daemon
            .json_raw(&["db", "get", "datapath", "--json"])
            .unwrap();
        (status[0]["row"]["nexthop-groups"].as_u64() >= Some(2)).then_some(())
    });
    let mut nhgs: HashMap<MapData, u32, NexthopGroup> =
        HashMap::try_from(Map::HashMap(daemon_map(&daemon, "NHGS"))).unwrap();
    // Ids from the top down: xnosd gives them from the bottom up.
    let filler = nexthop_group(&[nexthop(1, Default::default(), None)]);
    let mut fillers = (0..).map(|i| u32::MAX - i);
    let filled = fillers
        .by_ref()
        .take_while(|id| nhgs.insert(id, filler, 0).is_ok())
        .count() as u32;
    assert!(filled > 60_000, "{filled} groups fit");
    for id in (0..u32::from(ROOM)).map(|i| u32::MAX - filled + 1 + i) {
        nhgs.remove(&id).unwrap();
    }

    let gateway = |i: u8| format!("10.0.20.{}", 100 + i);
    for i in 0..ROUTES {
        let prefix = format!("10.99.{i}.0/24");
        topo.switch
            .ip(&["route", "add", &prefix, "via", &gateway(i)])
            .unwrap();
    }
    let rows = wait_for("every route programmed or refused", || {
        let rows = published(&daemon);
        (rows.len() == usize::from(ROUTES)).then_some(rows)
    });
    let (refused, programmed): (Vec<_>, Vec<_>) =
        rows.iter().partition(|(_, row)| row["error"].is_string());
    assert_eq!(programmed.len(), usize::from(ROOM), "{rows:?}");
    for (_, row) in &refused {
        let error = row["error"].as_str().unwrap();
        assert_eq!(error, "nexthop group not written: map NHGS is full");
        assert!(row["action"].is_null(), "{row}");
    }
    let refused: Vec<u8> = refused.into_iter().map(|(i, _)| *i).collect();

    // A programmed route moved to a gateway whose group does not fit stops forwarding by
    // its former gateway: the kernel, which has the route as it is now, forwards it (or,
    // with the room its former group left, the fast path by the new gateway).
    let moved = *programmed[0].0;
    let new_gateway = "10.0.20.250";
    topo.switch
        .ip(&[
            "route",
            "replace",
            &format!("10.99.{moved}.0/24"),
            "via",
            new_gateway,
        ])
        .unwrap();
    let group_gateway = |row: &serde_json::Value| {
        let group = nhgs.get(&(row["nexthop-group"].as_u64()? as u32), 0).ok()?;
        Some(group.nexthops[0].gateway)
    };
    let new_gateway = Some(xnos::datapath::route::addr16(new_gateway.parse().unwrap()));
    let row = wait_for("the moved route off its former gateway", || {
        let row = published(&daemon).remove(&moved)?;
        let to_kernel = row["action"] == "kernel" && row["error"].is_string();
        let by_new = row["action"] == "forward" && group_gateway(&row) == new_gateway;
        (to_kernel || by_new).then_some(row)
    });
    println!("moved route: {row}");

    // Deleting the programmed routes frees their groups: room for the refused ones.
    for (i, _) in programmed {
        let prefix = format!("10.99.{i}.0/24");
        topo.switch.ip(&["route", "del", &prefix]).unwrap();
    }
    let rows = wait_for("the refused routes programmed", || {
        let rows = published(&daemon);
        let done = rows.len() == refused.len() && rows.values().all(|row| row["error"].is_null());
        done.then_some(rows)
    });
    for i in refused {
        let row = &rows[&i];
        assert_eq!(row["action"], "forward", "{row}");
        let group = nhgs.get(&(row["nexthop-group"].as_u64().unwrap() as u32), 0);
        let gateway: std::net::IpAddr = gateway(i).parse().unwrap();
        assert_eq!(
            group.map(|g| g.nexthops[0].gateway).ok(),
            Some(xnos::datapath::route::addr16(gateway)),
            "route {i}: {row}"
        );
    }
}

/// The `datapath-neighbor` rows of the addresses `10.0.20.<100 + i>`, by `i`.
fn published_neighbors(daemon: &Daemon) -> std::collections::BTreeMap<u8, serde_json::Value> {
    let rows = daemon
        .json_raw(&["db", "get", "datapath-neighbor", "--json"])
        .unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let host: u8 = r["row"]["ip"]
                .as_str()?
                .strip_prefix("10.0.20.")?
                .parse()
                .ok()?;
            Some((host.checked_sub(100)?, r["row"].clone()))
        })
        .collect()
}

// What this shows: neighbours the full neighbour map refuses are published with their
// error (their packets go to the kernel meanwhile); once neighbours are deleted, which
// frees entries, the refused ones are programmed without any change of their own.
// (The map is filled through xnosd's own map, as for the routes above.)
#[test]
fn neighbors_the_full_map_refused_are_programmed_once_there_is_room() {
    require_root!();
    const ROOM: u8 = 4;
    const NEIGHBORS: u8 = 8;
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &two_vlans()).unwrap();
    let mut neighs: HashMap<MapData, NeighKey, NeighEntry> =
        HashMap::try_from(Map::HashMap(daemon_map(&daemon, "NEIGHS"))).unwrap();
    // Keys on no interface of xnosd's: they never meet its own.
    let filler_key = |i: u32| NeighKey {
        ifindex: u32::MAX - i,
        addr: [0; 16],
    };
    let filler = NeighEntry {
        mac: [2, 0, 0, 0, 0, 0xff],
        _pad: [0; 2],
    };
    let filled = (0..)
        .take_while(|i| neighs.insert(filler_key(*i), filler, 0).is_ok())
        .count() as u32;
    assert!(filled > 60_000, "{filled} neighbours fit");
    for i in 0..u32::from(ROOM) {
        neighs.remove(&filler_key(i)).unwrap();
    }

    let ip = |i: u8| format!("10.0.20.{}", 100 + i);
    let mac = |i: u8| format_mac([2, 0, 0, 0, 0x20, i]);
    for i in 0..NEIGHBORS {
        topo.switch
            .ip(&[
                "neigh",
                "add",
                &ip(i),
                "lladdr",
                &mac(i),
                "dev",
                "vlan20",
                "nud",
                "permanent",
            ])
            .unwrap();
    }
    let rows = wait_for("every neighbour programmed or refused", || {
        let rows = published_neighbors(&daemon);
        (rows.len() == usize::from(NEIGHBORS)).then_some(rows)
    });
    let (refused, programmed): (Vec<_>, Vec<_>) =
        rows.iter().partition(|(_, row)| row["error"].is_string());
    assert_eq!(programmed.len(), usize::from(ROOM), "{rows:?}");
    for (_, row) in &refused {
        assert!(row["mac"].is_null(), "{row}");
        let error = row["error"].as_str().unwrap();
        assert_eq!(error, "map NEIGHS is full");
    }
    let refused: Vec<u8> = refused.into_iter().map(|(i, _)| *i).collect();

    // Deleting the programmed neighbours frees their entries: room for the refused ones.
    for (i, _) in programmed {
        topo.switch
            .ip(&["neigh", "del", &ip(*i), "dev", "vlan20"])
            .unwrap();
    }
    let rows = wait_for("the refused neighbours programmed", || {
        let rows = published_neighbors(&daemon);
        let done = rows.len() == refused.len() && rows.values().all(|row| row["error"].is_null());
        done.then_some(rows)
    });
    for i in refused {
        assert_eq!(rows[&i]["mac"], mac(i), "neighbour {}: {}", ip(i), rows[&i]);
    }
}
