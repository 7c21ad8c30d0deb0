//! The config file's parsing and validation, without root or interfaces.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse("test.toml", text, |name: &str| name.starts_with("swp"))
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be rejected")
}

const GOOD: &str = r#"
[switch]
fdb-aging = 60

[[vlan]]
id = 10
name = "servers"

[[port]]
name = "swp1"        # an existing kernel interface
mode = "access"
vlan = 10

[[port]]
name = "swp3"
mode = "trunk"
vlans = [10, 20]
native-vlan = 1      # optional

[[fdb]]
mac = "02:00:00:00:00:10"
vlan = 10
port = "swp1"
"#;

#[test]
fn parses_the_documented_example() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.switch.fdb_aging_secs, 60);
    assert_eq!(config.ports["swp1"].mode, PortMode::Access { vlan: 10 });
    assert_eq!(
        config.ports["swp3"].mode,
        PortMode::Trunk {
            vlans: [10, 20].into(),
            native_vlan: Some(1)
        }
    );
    assert_eq!(
        config.vlans.keys().copied().collect::<Vec<_>>(),
        [1, 10, 20]
    );
    assert_eq!(config.vlans[&10].name.as_deref(), Some("servers"));
    assert_eq!(config.vlans[&20].name, None);
    let mac = "02:00:00:00:00:10".parse().unwrap();
    assert_eq!(config.fdb[&(10, mac)].port, "swp1");
}

#[test]
fn empty_config_is_valid() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn unknown_port_names_key_and_line() {
    let e = err("[[port]]\nname = \"eth9\"\nmode = \"access\"\nvlan = 1\n");
    assert_eq!((e.line, e.key.as_str()), (2, "port[0].name"));
    assert!(
        e.message.contains("no kernel interface named \"eth9\""),
        "{e}"
    );
}

#[test]
fn vlan_out_of_range() {
    for (text, key, line) in [
        ("[[vlan]]\nid = 4095\n", "vlan[0].id", 2),
        ("[[vlan]]\nid = 0\n", "vlan[0].id", 2),
        (
            "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 5000\n",
            "port[0].vlan",
            4,
        ),
        (
            "[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nvlans = [10,\n 4095]\n",
            "port[0].vlans[1]",
            5,
        ),
        (
            "[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nnative-vlan = -1\n",
            "port[0].native-vlan",
            4,
        ),
    ] {
        let e = err(text);
        assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
        assert!(e.message.contains("out of range 1..4094"), "{e}");
    }
}

#[test]
fn access_port_without_vlan() {
    let e = err("\n[[port]]\nname = \"swp1\"\nmode = \"access\"\n");
    assert_eq!((e.key.as_str(), e.line), ("port[0].vlan", 2));
}

#[test]
fn duplicates() {
    let e = err(
        "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 2\n",
    );
    assert_eq!((e.key.as_str(), e.line), ("port[1].name", 6));
    let e = err("[[vlan]]\nid = 10\n[[vlan]]\nid = 10\n");
    assert_eq!((e.key.as_str(), e.line), ("vlan[1].id", 4));
    let e = err("[[vlan]]\nid = 10\nname = \"a\"\n[[vlan]]\nid = 11\nname = \"a\"\n");
    assert_eq!((e.key.as_str(), e.line), ("vlan[1].name", 6));
}

#[test]
fn syntax_and_unknown_keys_name_the_line() {
    let e = err("[[vlan]]\nid = 10\nname = \"x\n");
    assert_eq!((e.key.as_str(), e.line), ("(syntax)", 3));
    let e = err("[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\nspeed = 10\n");
    assert_eq!(e.line, 5);
    assert!(e.message.contains("unknown field `speed`"), "{e}");
    let e = err("[[port]]\nname = \"swp1\"\nmode = \"hybrid\"\n");
    assert_eq!(e.line, 3);
    assert!(
        e.message
            .contains("unknown port mode name \"hybrid\"; one of access, trunk"),
        "{e}"
    );
}

#[test]
fn mode_specific_keys() {
    let e = err("[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\nvlans = [2]\n");
    assert_eq!(e.key, "port[0].vlans");
    let e = err("[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nvlan = 1\n");
    assert_eq!(e.key, "port[0].vlan");
    let e = err("[[port]]\nname = \"swp1\"\nmode = \"trunk\"\n");
    assert_eq!(e.key, "port[0].vlans");
}

#[test]
fn static_fdb_is_checked() {
    let base = "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n";
    for (fdb, key) in [
        (
            "mac = \"02:00:00:00:00:10\"\nvlan = 10\nport = \"swp2\"\n",
            "fdb[0].port",
        ),
        (
            "mac = \"02:00:00:00:00:10\"\nvlan = 20\nport = \"swp1\"\n",
            "fdb[0].vlan",
        ),
        (
            "mac = \"01:00:5e:00:00:01\"\nvlan = 10\nport = \"swp1\"\n",
            "fdb[0].mac",
        ),
        (
            "mac = \"nonsense\"\nvlan = 10\nport = \"swp1\"\n",
            "fdb[0].mac",
        ),
    ] {
        let e = err(&format!("{base}[[fdb]]\n{fdb}"));
        assert_eq!(e.key, key, "{e}");
    }
}

const L3: &str = r#"
[switch]
router-mac = "02:00:00:00:01:00"

[[vlan]]
id = 10

[[port]]
name = "swp1"
mode = "access"
vlan = 10

[[interface]]
vlan = 10
addresses = ["10.0.10.1/24", "fd00:10::1/64"]

[[interface]]
port = "swp5"
addresses = ["10.0.99.1/30"]

[[route]]
prefix = "10.99.0.0/16"
nexthops = ["10.0.10.2", "10.0.10.3"]
"#;

#[test]
fn parses_l3_interfaces_and_routes() {
    let config = parse(L3).unwrap();
    assert_eq!(
        config.switch.router_mac(),
        "02:00:00:00:01:00".parse().unwrap()
    );
    let svi = &config.interfaces["vlan10"];
    assert_eq!((svi.vlan, svi.addresses.len()), (Some(10), 2));
    assert_eq!(config.interfaces["swp5"].port.as_deref(), Some("swp5"));
    let prefix: IpNet = "10.99.0.0/16".parse().unwrap();
    assert_eq!(config.routes[&prefix].nexthops.len(), 2);
    assert_eq!(parse(&config.to_toml()).unwrap(), config);
}

#[test]
fn bad_l3_config_names_key_and_line() {
    for (from, to, key, line) in [
        (
            "vlan = 10\naddresses",
            "vlan = 11\naddresses",
            "interface[0].vlan",
            14,
        ),
        (
            "port = \"swp5\"",
            "port = \"swp1\"",
            "interface[1].port",
            18,
        ),
        (
            "\"10.0.99.1/30\"",
            "\"10.0.99.1\"",
            "interface[1].addresses[0]",
            19,
        ),
        (
            "\"10.99.0.0/16\"",
            "\"10.99.0.0/33\"",
            "route[0].prefix",
            22,
        ),
        ("\"10.0.10.3\"", "\"fd00::3\"", "route[0].nexthops", 23),
        (
            "\"02:00:00:00:01:00\"",
            "\"01:00:00:00:01:00\"",
            "switch.router-mac",
            3,
        ),
    ] {
        let e = err(&L3.replace(from, to));
        assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
    }
}

#[test]
fn mtu_on_ports_and_interfaces() {
    let text = L3
        .replace(
            "vlan = 10\n\n[[interface]]",
            "vlan = 10\nmtu = 9000\n\n[[interface]]",
        )
        .replace("\"10.0.99.1/30\"]", "\"10.0.99.1/30\"]\nmtu = 1400");
    let config = parse(&text).unwrap();
    assert_eq!(config.ports["swp1"].mtu, Some(9000));
    assert_eq!(config.interfaces["swp5"].mtu, Some(1400));
    assert_eq!(config.interfaces["vlan10"].mtu, None);
    assert_eq!(parse(&config.to_toml()).unwrap(), config);
    // The file and a typed row are refused with the same words, the file at its line.
    let e = err(&text.replace("mtu = 1400", "mtu = 67"));
    assert_eq!((e.key.as_str(), e.line), ("interface[1].mtu", 21), "{e}");
    assert_eq!(e.message, "MTU 67 is out of range 68..65535");
    let e = err(&text.replace("mtu = 9000", "mtu = 65536"));
    assert_eq!((e.key.as_str(), e.line), ("port[0].mtu", 12), "{e}");
    let e = err(&text.replace("mtu = 9000", "mtu = -1"));
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("port[0].mtu", "MTU -1 is out of range 68..65535"),
        "{e}"
    );
    let mut config = config;
    config.ports.get_mut("swp1").unwrap().mtu = Some(10);
    let e = config.validate(&|_: &str| true).unwrap_err();
    assert_eq!(
        (e.table.as_str(), e.field.as_str(), e.message.as_str()),
        ("port", "mtu", "MTU 10 is out of range 68..65535"),
        "{e}"
    );
}

#[test]
fn datapath_choice_per_port() {
    let base = "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n";
    let config = parse(&format!("{base}datapath = \"xdp-generic\"\n")).unwrap();
    assert_eq!(config.ports["swp1"].datapath, DatapathChoice::XdpGeneric);
    assert_eq!(parse(&config.to_toml()).unwrap(), config);
    assert_eq!(
        parse(base).unwrap().ports["swp1"].datapath,
        DatapathChoice::Auto
    );
    let config = parse(&format!("{base}datapath = \"tc\"\n")).unwrap();
    assert_eq!(config.ports["swp1"].datapath, DatapathChoice::Tc);
    assert_eq!(parse(&config.to_toml()).unwrap(), config);
    let e = err(&format!("{base}datapath = \"dpdk\"\n"));
    assert_eq!(e.line, 5);
    assert!(
        e.message.contains("unknown variant `dpdk`") && e.message.contains("switchdev"),
        "{e}"
    );
}

#[test]
fn router_mac_is_derived_stably_when_not_set() {
    let config = parse("").unwrap();
    let mac = config.switch.router_mac();
    assert_eq!(mac, config.switch.router_mac());
    assert!(
        !mac.is_multicast() && mac.0[0] & 2 != 0,
        "{mac} is not locally administered unicast"
    );
}

#[test]
fn counts_name_every_table() {
    assert_eq!(
        parse(GOOD).unwrap().counts(),
        "3 VLANs, 2 ports, 1 static FDB entry, 0 interfaces, 0 routes"
    );
}

#[test]
fn to_toml_round_trips() {
    let config = parse(GOOD).unwrap();
    let text = config.to_toml();
    assert_eq!(parse(&text).unwrap(), config, "{text}");
    assert_eq!(parse("").unwrap().to_toml(), "[switch]\nfdb-aging = 300\n");
}

// What this shows: a trunk's `vlans` takes ranges ("100-130", both ends in), written back
// the same way by `config save` (and by the CLI's change lines); a range that is not one,
// runs backwards, leaves 1..4094 or repeats a VLAN is refused at its key and line.
#[test]
fn trunk_vlans_take_ranges() {
    let trunk =
        |vlans: &str| format!("[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nvlans = {vlans}\n");
    let config = parse(&trunk(r#"[10, "100-130", 20]"#)).unwrap();
    let PortMode::Trunk { vlans, .. } = &config.ports["swp1"].mode else {
        panic!("not a trunk");
    };
    let expected: BTreeSet<u16> = [10, 20].into_iter().chain(100..=130).collect();
    assert_eq!(vlans, &expected);
    let text = config.to_toml();
    assert!(text.contains(r#"vlans = [10, 20, "100-130"]"#), "{text}");
    assert_eq!(parse(&text).unwrap(), config);
    for (vlans, message) in [
        (
            r#"["100-x"]"#,
            r#""100-x" is not a VLAN range (write "100-130", or a number)"#,
        ),
        (
            r#"["130-100"]"#,
            r#"VLAN range "130-100" ends before it starts"#,
        ),
        (r#"["4000-4095"]"#, "VLAN 4095 is out of range 1..4094"),
        (r#"[105, "100-110"]"#, "VLAN 105 is listed twice"),
    ] {
        let e = parse(&trunk(vlans)).unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (4, message), "{vlans}");
    }
}

#[test]
fn validate_checks_references_between_tables() {
    let mut config = parse(GOOD).unwrap();
    config.vlans.remove(&20);
    let e = config.validate(&|_: &str| true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "port swp3: vlans: VLAN 20 does not exist (add it to the vlan table first)"
    );
}

#[test]
fn error_display_is_one_line_with_file_and_line() {
    let e = err("[[vlan]]\nid = 9999\n");
    assert_eq!(
        e.to_string(),
        "test.toml:2: vlan[0].id: VLAN 9999 is out of range 1..4094"
    );
}

// What this shows: a rule broken in the file and the same rule broken in typed rows (as
// the API and the CLI send them) give the same message: the check exists once, and the
// file only adds its line and key.
#[test]
fn file_and_typed_rows_are_refused_in_the_same_words() {
    let typed = |text: &str, change: &dyn Fn(&mut Config)| {
        let mut config = parse(text).unwrap();
        change(&mut config);
        config
            .validate(&|name: &str| name.starts_with("swp"))
            .unwrap_err()
    };
    type Case = (String, &'static str, &'static str, Box<dyn Fn(&mut Config)>);
    let cases: [Case; 4] = [
        (
            "[[port]]\nname = \"swp1\"\nmode = \"trunk\"\n".into(),
            "port[0].vlans",
            GOOD,
            Box::new(|c| {
                c.ports.get_mut("swp3").unwrap().mode = PortMode::Trunk {
                    vlans: BTreeSet::new(),
                    native_vlan: None,
                }
            }),
        ),
        (
            GOOD.replace("port = \"swp1\"", "port = \"swp2\""),
            "fdb[0].port",
            GOOD,
            Box::new(|c| c.fdb.values_mut().for_each(|f| f.port = "swp2".into())),
        ),
        (
            L3.replace("vlan = 10\naddresses", "vlan = 11\naddresses"),
            "interface[0].vlan",
            L3,
            Box::new(|c| {
                let mut svi = c.interfaces.remove("vlan10").unwrap();
                svi.name = InterfaceConfig::svi_name(11);
                svi.vlan = Some(11);
                c.interfaces.insert(svi.name.clone(), svi);
            }),
        ),
        (
            L3.replace("port = \"swp5\"", "port = \"swp1\""),
            "interface[1].port",
            L3,
            Box::new(|c| {
                let mut routed = c.interfaces.remove("swp5").unwrap();
                routed.name = "swp1".into();
                routed.port = Some("swp1".into());
                c.interfaces.insert(routed.name.clone(), routed);
            }),
        ),
    ];
    for (file, key, good, change) in cases {
        let from_file = err(&file);
        let from_rows = typed(good, &*change);
        assert_eq!(from_file.key, key, "{from_file}");
        assert_eq!(
            from_file.message, from_rows.message,
            "{from_file} / {from_rows}"
        );
    }
}

#[test]
fn a_rule_the_file_cannot_name_a_field_for_falls_back_to_its_row() {
    let e = err("\n[[port]]\nname = \"swp1\"\nmode = \"trunk\"\n");
    assert_eq!(
        e.to_string(),
        "test.toml:2: port[0].vlans: a trunk must carry at least one VLAN: tagged (vlans) and/or native"
    );
}

#[test]
fn a_native_vlan_that_is_also_tagged_is_refused_at_its_line() {
    let e = err(&GOOD.replace("native-vlan = 1      # optional", "native-vlan = 20"));
    assert_eq!((e.key.as_str(), e.line), ("port[1].native-vlan", 18), "{e}");
    assert!(e.message.starts_with("VLAN 20 is also in vlans"), "{e}");
}

// What this shows: a config route whose nexthop no subnet the switch is on reaches is
// refused with its key and what to do; a nexthop on an interface's subnet, or on a subnet
// the kernel has a connected route to, is accepted; a route the config had alike is not
// checked again (a connected route lost for a while blocks no other change) unless the
// interfaces change. A nexthop that is the switch's own address is refused too.
#[test]
fn a_route_needs_a_nexthop_on_a_subnet_the_switch_is_on() {
    let text = "[[vlan]]\nid = 10\n[[interface]]\nvlan = 10\naddresses = [\"10.0.10.1/24\"]\n\
                [[route]]\nprefix = \"10.9.0.0/16\"\nnexthops = [\"10.0.10.2\", \"192.0.2.5\"]\n";
    let config = parse(text).unwrap();
    let e = config.validate_nexthops(None, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "route 10.9.0.0/16: nexthops: nexthop 192.0.2.5 is on no subnet the switch is on: \
         no interface address and no connected kernel route reaches it (give an \
         [[interface]] an address on its subnet, or use a nexthop on a connected subnet)"
    );
    let connected: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
    assert_eq!(config.validate_nexthops(None, &connected), Ok(()));

    let mut without_iface = config.clone();
    without_iface.interfaces.clear();
    let e = without_iface
        .validate_nexthops(Some(&config), &connected)
        .unwrap_err();
    assert!(e.message.contains("nexthop 10.0.10.2"), "{e}");
    assert_eq!(config.validate_nexthops(Some(&config), &[]), Ok(()));
    // A route that waits already does not block a change of other interfaces.
    let more = parse(&format!(
        "{text}[[vlan]]\nid = 20\n[[interface]]\nvlan = 20\naddresses = [\"10.0.20.1/24\"]\n"
    ))
    .unwrap();
    assert_eq!(more.validate_nexthops(Some(&config), &[]), Ok(()));

    let mut own = config.clone();
    own.routes
        .values_mut()
        .for_each(|r| r.nexthops = vec!["10.0.10.1".parse().unwrap()]);
    let e = own.validate_nexthops(None, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "route 10.9.0.0/16: nexthops: nexthop 10.0.10.1 is an address of interface vlan10, \
         the switch itself (use the address of the next router on that subnet)"
    );
}

/// Interfaces as the kernel of a box with a loopback device named `lo0` sees them.
struct WithLoopback;

impl Links for WithLoopback {
    fn facts(&self, name: &str) -> Option<LinkFacts> {
        Some(LinkFacts {
            loopback: name == "lo0",
        })
    }
}

// What this shows: the loopback device (by its flag or the name `lo`) and the netdevs xnos
// makes itself cannot be ports, switched or routed; the refusal names the port, what it
// is, and the key and line.
#[test]
fn loopback_and_netdevs_of_xnos_are_refused_as_ports() {
    let port =
        |name: &str| format!("{L3}\n[[port]]\nname = \"{name}\"\nmode = \"access\"\nvlan = 10\n");
    for (name, message) in [
        ("lo", "lo is the loopback device; it cannot be a port"),
        ("lo0", "lo0 is the loopback device; it cannot be a port"),
        (
            "vlan10",
            "vlan10 is the kernel side of interface vlan10, made by xnos; it cannot be a port",
        ),
        (
            "vlan10i",
            "vlan10i is the internal port of interface vlan10, made by xnos; it cannot be a port",
        ),
        (
            "xbr",
            "xbr is the kernel bridge of the switchdev ports, made by xnos; it cannot be a port",
        ),
        (
            "xbr20",
            "xbr20 is the kernel bridge of VLAN 20's switchdev ports, made by xnos; it cannot \
             be a port",
        ),
        (
            "xcpu20i",
            "xcpu20i is an end of the CPU port of VLAN 20 (between the kernel bridge and the \
             fast path), made by xnos; it cannot be a port",
        ),
    ] {
        let e = Config::parse("test.toml", &port(name), WithLoopback).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("port[1].name", 26), "{e}");
        assert_eq!(e.message, message);
    }
    // A vlan20 of the operator's own (no SVI of VLAN 20 configured) may be a port.
    Config::parse("test.toml", &port("vlan20"), WithLoopback).unwrap();
    let routed = L3.replace("port = \"swp5\"", "port = \"lo\"");
    let e = Config::parse("test.toml", &routed, WithLoopback).unwrap_err();
    assert_eq!(e.key, "interface[1].port");
    assert_eq!(e.message, "lo is the loopback device; it cannot be a port");
}

// What this shows: a VLAN a port uses exists, whether the port comes from the file or
// from typed rows (the API and the CLI): it gets an unnamed row of the vlan table.
#[test]
fn a_vlan_a_port_uses_exists() {
    let mut config = parse(GOOD).unwrap();
    assert_eq!(config.vlans[&20], VlanConfig { id: 20, name: None });
    config.ports.get_mut("swp3").unwrap().mode = PortMode::Access { vlan: 30 };
    config.add_port_vlans();
    assert_eq!(config.vlans[&30], VlanConfig { id: 30, name: None });
    config
        .validate(&|name: &str| name.starts_with("swp"))
        .unwrap();
}

/// Found by the config fuzz target: toml gives some syntax errors (a control character
/// in a comment) an empty message.
#[test]
fn every_syntax_error_says_what_is_wrong() {
    for text in ["# a\r\0\n", "[switch]\n# \u{7f}\n", "x = \"\0\"\n"] {
        let e = err(text);
        assert!(!e.message.trim().is_empty(), "{text:?}: {e:?}");
    }
}

// What this shows: the netdevs a starting xnosd may take programs over from are exactly
// those its datapath would attach to for the config (switch ports, the SVI's internal
// port, a routed port, the CPU port of each VLAN a switch port carries), so a second
// instance in the namespace never takes over the first one's ports.
#[test]
fn datapath_port_names_are_what_the_datapath_attaches_to() {
    let config = parse(L3).unwrap();
    let names: Vec<String> = config.datapath_port_names().into_iter().collect();
    assert_eq!(names, ["swp1", "swp5", "vlan10i", "xcpu10i"]);
}
