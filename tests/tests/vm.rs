//! The switchdev backend on a kernel whose bridge filters VLANs and with a switchdev
//! driver, neither of which this machine's kernel has: a small VM boots Debian 12's 6.12
//! kernel (downloaded by `cargo xtask setup`, which also builds netdevsim for it from
//! Debian's kernel source) with an initramfs made here (busybox, iproute2, ethtool, the xnos
//! binaries under test), and a script inside it builds hosts in namespaces, runs xnosd and
//! reports what it saw on the serial console. QEMU runs with software emulation (TCG): nested KVM is not dependable on
//! this kind of machine.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xnos_tests::{binary, find_by, require_root};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Copy `bin` to `root/dest` with every shared library it loads, at their own paths.
fn install(bin: &Path, root: &Path, dest: &str) {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(bin, &target).unwrap_or_else(|e| panic!("copying {}: {e}", bin.display()));
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|l| l.starts_with('/')),
        };
        let Some(lib) = lib.filter(|l| l.starts_with('/')) else {
            continue;
        };
        let into = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(into.parent().unwrap()).unwrap();
        std::fs::copy(lib, &into).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
}

/// The script the VM runs as init: every finding is a `VMTEST <key> <value>` line.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t bpf bpf /sys/fs/bpf; mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mkdir -p /run/netns /run/xnos
for m in llc stp bridge veth garp mrp 8021q psample netdevsim; do
  insmod /mods/$m.ko || echo "VMTEST insmod-$m failed"
done
mount -t debugfs debugfs /sys/kernel/debug
IP=/usr/bin/ip
# netdevsim: a switchdev driver with two ports (a switch ID, FIB offload emulation).
echo "1 2" > /sys/bus/netdevsim/new_device
sleep 0.5
n=1
for old in $(ls /sys/bus/netdevsim/devices/netdevsim1/net/); do
  $IP link set $old name nsw$n; $IP link set nsw$n up; n=$((n + 1))
done
echo "VMTEST switch-id $(cat /sys/class/net/nsw1/phys_switch_id)"
$IP -d link show nsw1 | grep -o "switchid [0-9a-f]*" | sed 's/^/VMTEST ip-switchid /' 
X="/usr/bin/xnos --socket /run/xnos/xnosd.sock"
echo "VMTEST kernel $(uname -r)"
host() {
  $IP netns add $1
  $IP link add $2 type veth peer name eth0 netns $1
  $IP link set $2 up; $IP -n $1 link set lo up; $IP -n $1 link set eth0 up
  # GRO so that XDP can redirect into the pair; software checksums (see docs/architecture.md).
  $IP netns exec $1 /usr/bin/ethtool -K eth0 gro on tx off >/dev/null 2>&1
}
host h1 swp1; $IP -n h1 addr add 10.0.10.1/24 dev eth0
$IP -n h1 route add default via 10.0.10.254
host h2 swp2
for v in 10 20; do
  $IP -n h2 link add link eth0 name eth0.$v type vlan id $v
  $IP -n h2 link set eth0.$v up
  $IP -n h2 addr add 10.0.$v.2/24 dev eth0.$v
done
host h3 swp3; $IP -n h3 addr add 10.0.10.3/24 dev eth0
$IP -n h3 route add default via 10.0.10.254
host h4 swp4; $IP -n h4 addr add 10.0.20.4/24 dev eth0
$IP -n h4 route add default via 10.0.20.254
host h5 swp5; $IP -n h5 addr add 10.0.40.5/24 dev eth0
$IP -n h5 route add default via 10.0.40.254
echo "VMTEST h1-mac $(cat /sys/class/net/swp1/address) $($IP netns exec h1 cat /sys/class/net/eth0/address)"
cat > /tmp/base.toml <<EOF
[[port]]
name = "swp1"
mode = "access"
vlan = 10
datapath = "switchdev"

[[port]]
name = "swp2"
mode = "trunk"
vlans = [10, 20]
datapath = "switchdev"

[[port]]
name = "swp3"
mode = "access"
vlan = 10

[[port]]
name = "swp4"
mode = "access"
vlan = 20
datapath = "switchdev"

[[port]]
name = "nsw1"
mode = "access"
vlan = 30

[[port]]
name = "nsw2"
mode = "access"
vlan = 30

[[interface]]
vlan = 10
addresses = ["10.0.10.254/24"]

[[interface]]
vlan = 20
addresses = ["10.0.20.254/24"]

[[port]]
name = "swp5"
mode = "access"
vlan = 40
datapath = "auto"

[[interface]]
vlan = 40
addresses = ["10.0.40.254/24"]

[[route]]
prefix = "192.0.2.0/24"
nexthops = ["10.0.40.5"]

[[fdb]]
mac = "02:00:00:00:00:99"
vlan = 10
port = "swp1"
EOF
with_static() {
  cat /tmp/base.toml
  printf '[[fdb]]\nmac = "02:00:00:00:00:98"\nvlan = %s\nport = "swp2"\n' $1
}
with_static 10 > /tmp/xnos.toml
# until_ok <what> <shell test>: wait up to 30 s for the test to pass, else say so.
until_ok() {
  i=0
  while [ $i -lt 150 ]; do
    eval "$2" && return 0
    sleep 0.2; i=$((i + 1))
  done
  echo "VMTEST timeout $1"
  return 1
}
/usr/bin/xnosd --config /tmp/xnos.toml --socket /run/xnos/xnosd.sock --pin-dir /sys/fs/bpf/xnos >/tmp/xnosd.log 2>&1 &
ready() {
  n=$($X show ports --json 2>/dev/null | tr -d ' \n' | grep -o '"bridge-member":true' | wc -l)
  x=$($IP -d link show 2>/dev/null | grep -c prog/xdp)
  [ "$n" = 5 ] && [ "$x" = 6 ]
}
until_ok ready ready
echo "VMTEST kernel-features $($X db get kernel-features --json | tr -d '\n')"
echo "VMTEST ports $($X show ports --json | tr -d '\n')"
echo "VMTEST link-nsw1 $($X db get link --json | tr -d '\n' | grep -o '"name": *"nsw1"[^}]*')"
echo "VMTEST vlans $(/usr/bin/bridge -j vlan show | tr -d '\n')"
echo "VMTEST cpu-xdp $($IP -d link show xcpu10i | grep -c prog/xdp)$($IP -d link show xcpu20i | grep -c prog/xdp)"
check() {
  if $IP netns exec $1 /bin/busybox ping -c 2 -W 3 $2 >/dev/null 2>&1; then r=ok; else r=fail; fi
  echo "VMTEST ping-$1-$2$3 $r"
}
check h1 10.0.10.2
check h4 10.0.20.2
check h1 10.0.10.3
check h3 10.0.10.2
# Routed: the SVIs are VLAN uppers of the bridge (the ASIC's router interfaces).
echo "VMTEST svi-link $($IP -d link show vlan10 | tr '\n' ' ')"
echo "VMTEST svi-veths $($IP -o link show | grep -c -E 'vlan(10|20)i')"
echo "VMTEST interfaces $($X show interfaces --json | tr -d '\n')"
check h1 10.0.10.254
check h1 10.0.20.4
check h4 10.0.10.3
check h3 10.0.20.4
check h3 10.0.40.5
check h5 10.0.20.4
echo "VMTEST routed $($X show routes | grep -o 'fast path: [0-9]* IPv4')"
echo "VMTEST macs $(cat /sys/class/net/xbr/address) $(cat /sys/class/net/vlan10/address)"
echo "VMTEST bridge-fdb $(/usr/bin/bridge -j fdb show br xbr | tr -d '\n')"
# (Before the changes below: removing a port's VLAN flushes what the bridge learned on it.)
H1=$($IP netns exec h1 cat /sys/class/net/eth0/address)
until_ok h1-learned "$X show fdb --json | grep -q $H1"
echo "VMTEST xnos-fdb $($X show fdb --json | tr -d '\n')"
# Hand-made changes to what xnos programmed are undone.
/usr/bin/bridge vlan del dev swp1 vid 10
until_ok vlan-restored "/usr/bin/bridge vlan show dev swp1 | grep -q ' 10 '"
echo "VMTEST vlans-restored $(/usr/bin/bridge -j vlan show | tr -d '\n')"
$IP link set xbr type bridge vlan_filtering 0
until_ok filtering-restored "$IP -d link show xbr | grep -q 'vlan_filtering 1'"
echo "VMTEST xbr-filtering $($IP -d link show xbr | grep -o 'vlan_filtering [01]')"
# A static entry moves to another VLAN of the same port: the old one goes.
with_static 20 > /tmp/xnos2.toml
$X config apply /tmp/xnos2.toml >/dev/null
until_ok static-moved "/usr/bin/bridge fdb show dev swp2 | grep -q '02:00:00:00:00:98 vlan 20'"
echo "VMTEST swp2-fdb $(/usr/bin/bridge -j fdb show dev swp2 | tr -d '\n')"
# swp5 goes to the bridge: VLAN 40's SVI becomes an upper of the bridge; and back.
sed 's/datapath = "auto"/datapath = "switchdev"/' /tmp/xnos2.toml > /tmp/xnos3.toml
$X config apply /tmp/xnos3.toml >/dev/null
until_ok svi-to-bridge "$IP -d link show vlan40 | grep -q vlan40@xbr"
check h5 10.0.40.254 -bridged
check h5 10.0.20.4 -bridged
until_ok route-bridged "$IP route show 192.0.2.0/24 | grep -q vlan40"
$X config apply /tmp/xnos2.toml >/dev/null
until_ok svi-to-veth "$IP -d link show vlan40i 2>/dev/null | grep -q prog/xdp"
check h5 10.0.40.254 -veth
check h5 10.0.20.4 -veth
# The config route through VLAN 40 came back with its SVI (the kernel drops it silently).
until_ok route-veth "$IP route show 192.0.2.0/24 | grep -q vlan40"
echo "VMTEST after-veth $($IP -d link show vlan40 | grep -c veth) $($IP -o link show | grep -c xcpu40) $(/usr/bin/bridge vlan show dev xbr | grep -c ' 40')"
echo "VMTEST own-source $(dmesg | grep -c 'own address as source')"
# netdevsim traps every route of its namespace; with fail_route_offload set it fails them.
$IP route add 198.51.100.0/24 dev nsw1
echo Y > /sys/kernel/debug/netdevsim/netdevsim1/fib/fail_route_offload
$IP route add 203.0.113.0/24 dev nsw1
i=0
while [ $i -lt 50 ]; do
  $X show routes | grep -q offload-failed && break
  sleep 0.2; i=$((i + 1))
done
echo "VMTEST routes $($X show routes --json | tr -d '\n')"
echo "VMTEST kernel-routes $($IP route show 198.51.100.0/24; $IP route show 203.0.113.0/24)"
echo "VMTEST log $(grep -E 'WARN|ERROR' /tmp/xnosd.log | tail -5 | tr '\n' '|')"
echo "VMTEST links $($IP -br link | tr '\n' '|')"
echo "VMTEST bridge-ports $($X db get bridge-port --json | tr -d '\n ')"
echo "VMTEST done"
poweroff -f
"#;

/// Boot the VM and collect its `VMTEST` lines.
fn run_vm(kernel: &Path, initrd: &Path) -> (BTreeMap<String, String>, String) {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-nographic",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu-system-x86_64 (cargo xtask setup installs it)");
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let reader = read_all(Box::new(child.stdout.take().unwrap()));
    let errors = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.wait();
    let mut console = reader.join().unwrap();
    let errors = errors.join().unwrap();
    if !errors.trim().is_empty() {
        console.push_str(&format!("\n[qemu stderr]\n{errors}"));
    }
    // A kernel message may share a line with ours: take what follows the marker.
    let found = console
        .lines()
        .filter_map(|l| Some(&l[l.find("VMTEST ")? + "VMTEST ".len()..]))
        .map(|l| {
            let (key, value) = l.split_once(' ').unwrap_or((l, ""));
            (key.to_string(), value.trim().to_string())
        })
        .collect();
    (found, console)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// What this shows: on a kernel with bridge VLAN filtering, switchdev ports (access and
// trunk) go into one VLAN-aware bridge with per-port VLANs read back from the kernel, a
// trunk CPU port joins them to an XDP port, hosts reach each other across both, and the
// static and learned FDB entries are where they belong (the static one with its VLAN).
#[test]
fn vlan_aware_switchdev_bridge_in_a_vm() {
    require_root!();
    let kernel = workspace().join("target/vm-kernel");
    assert!(
        kernel.join("vmlinuz").is_file(),
        "no VM kernel in {}: `cargo xtask setup` downloads it",
        kernel.display()
    );
    let dir = TempDir(std::env::temp_dir().join(format!("xnos-vm-{}", std::process::id())));
    let root = dir.0.join("root");
    for sub in ["bin", "mods", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for (bin, dest) in [
        (PathBuf::from("/usr/sbin/ip"), "/usr/bin/ip"),
        (PathBuf::from("/usr/sbin/bridge"), "/usr/bin/bridge"),
        (PathBuf::from("/usr/sbin/ethtool"), "/usr/bin/ethtool"),
        (binary("xnosd").unwrap(), "/usr/bin/xnosd"),
        (binary("xnos").unwrap(), "/usr/bin/xnos"),
    ] {
        install(&bin, &root, dest);
    }
    for module in std::fs::read_dir(kernel.join("modules")).unwrap() {
        let module = module.unwrap().path();
        std::fs::copy(&module, root.join("mods").join(module.file_name().unwrap())).unwrap();
    }
    let init = root.join("init");
    std::fs::write(&init, INIT).unwrap();
    Command::new("chmod").arg("+x").arg(&init).status().unwrap();
    let initrd = dir.0.join("initrd.gz");
    let packed = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
            root.display(),
            initrd.display()
        ))
        .status()
        .unwrap();
    assert!(packed.success(), "packing the initramfs failed");

    let (found, console) = run_vm(&kernel.join("vmlinuz"), &initrd);
    let get = |key: &str| {
        found
            .get(key)
            .unwrap_or_else(|| panic!("the VM did not report {key}; console:\n{console}"))
            .clone()
    };
    assert!(
        found.contains_key("done"),
        "the VM script did not finish:\n{console}"
    );
    assert!(
        !found.keys().any(|k| k.starts_with("insmod-")),
        "modules failed to load:\n{console}"
    );
    assert!(
        !found.contains_key("timeout"),
        "the VM waited in vain for {}:\n{console}",
        get("timeout")
    );
    let json = |key: &str| -> serde_json::Value {
        serde_json::from_str(&get(key)).unwrap_or_else(|e| panic!("{key}: {e}\n{console}"))
    };

    assert_eq!(
        json("kernel-features")[0]["row"]["bridge-vlan-filtering"],
        true,
        "{console}"
    );
    // Seen in the VM, for the log of a passing run too.
    for key in [
        "kernel",
        "switch-id",
        "routed",
        "own-source",
        "xbr-filtering",
    ] {
        eprintln!("vm: {key}: {}", found.get(key).map_or("-", String::as_str));
    }
    let ports = json("ports");
    let port = |name: &str| find_by(&ports, "port", name);
    for name in ["swp1", "swp2", "swp4", "nsw1", "nsw2"] {
        let p = port(name);
        assert_eq!(p["datapath"], "switchdev", "{p}\n{console}");
        assert_eq!(p["bridge"], "xbr", "{p}");
        assert_eq!(p["bridge-member"], true, "{p}");
        assert!(p["error"].is_null(), "{p}");
    }
    assert_eq!(port("swp3")["datapath"], "xdp-native", "{ports}");
    // netdevsim's ports report a switch ID: `auto` gives them to the bridge.
    let switch_id = get("switch-id");
    assert!(
        !switch_id.is_empty(),
        "netdevsim has no switch ID\n{console}"
    );
    for name in ["nsw1", "nsw2"] {
        let reason = port(name)["datapath-reason"].as_str().unwrap().to_string();
        assert!(
            reason.contains(&format!("auto: the driver reports switch ID {switch_id}")),
            "{reason}"
        );
    }
    assert_eq!(
        get("cpu-xdp"),
        "11",
        "no XDP on the CPU ports xcpu10i and xcpu20i\n{console}"
    );

    // Per-port VLANs as the kernel has them (`bridge -j vlan show`).
    let port_vlans_in = |vlans: &serde_json::Value, name: &str| -> BTreeMap<u64, Vec<String>> {
        find_by(vlans, "ifname", name)["vlans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let flags = v["flags"]
                    .as_array()
                    .map(|f| f.iter().map(|f| f.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                (v["vlan"].as_u64().unwrap(), flags)
            })
            .collect()
    };
    let vlans = json("vlans");
    let port_vlans = |name: &str| port_vlans_in(&vlans, name);
    let untagged = vec!["PVID".to_string(), "Egress Untagged".to_string()];
    assert_eq!(port_vlans("swp1"), BTreeMap::from([(10, untagged.clone())]));
    assert_eq!(port_vlans("swp4"), BTreeMap::from([(20, untagged.clone())]));
    assert_eq!(
        port_vlans("swp2"),
        BTreeMap::from([(10, vec![]), (20, vec![])])
    );
    // One untagged CPU port per VLAN.
    assert_eq!(
        port_vlans("xcpu10"),
        BTreeMap::from([(10, untagged.clone())])
    );
    assert_eq!(
        port_vlans("xcpu20"),
        BTreeMap::from([(20, untagged.clone())])
    );

    for (host, dst, what) in [
        ("h1", "10.0.10.2", "access -> tagged trunk, in the bridge"),
        ("h4", "10.0.20.2", "access VLAN 20 -> trunk, in the bridge"),
        ("h1", "10.0.10.3", "bridge -> CPU port -> XDP port"),
        ("h3", "10.0.10.2", "XDP port -> CPU port -> bridge trunk"),
        ("h1", "10.0.10.254", "bridge port -> the SVI on the bridge"),
        (
            "h1",
            "10.0.20.4",
            "bridge port -> routed by the bridge's SVIs -> bridge port",
        ),
        (
            "h4",
            "10.0.10.3",
            "bridge port -> routed on the bridge -> CPU port -> XDP port",
        ),
        (
            "h3",
            "10.0.20.4",
            "XDP port -> CPU port -> routed on the bridge (a bridged VLAN) -> bridge port",
        ),
        (
            "h3",
            "10.0.40.5",
            "XDP port -> routed by XDP (veth SVI) -> XDP port",
        ),
        (
            "h5",
            "10.0.20.4",
            "XDP port -> veth SVI -> routed by the kernel into a bridged VLAN -> bridge port",
        ),
    ] {
        assert_eq!(
            get(&format!("ping-{host}-{dst}")),
            "ok",
            "{what}\n{console}"
        );
    }

    let bridge_fdb = json("bridge-fdb");
    assert!(
        bridge_fdb
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == "02:00:00:00:00:99"
                && e["ifname"] == "swp1"
                && e["vlan"] == 10
                && e["state"] == "static"),
        "static entry with its VLAN: {bridge_fdb}"
    );
    // The SVIs of the switchdev VLANs are VLAN uppers of the bridge, which carries their
    // VLANs itself and has the router MAC; the fast path reaches them through the CPU
    // ports (no veth SVI ports).
    let svi = get("svi-link");
    assert!(
        svi.contains("vlan10@xbr") && svi.contains("vlan protocol 802.1Q id 10"),
        "{svi}"
    );
    let bridge_vlans: Vec<u64> = port_vlans("xbr").into_keys().collect();
    assert_eq!(bridge_vlans, [10, 20], "{vlans}");
    let macs = get("macs");
    let macs: Vec<&str> = macs.split_whitespace().collect();
    assert_eq!(macs.len(), 2, "{console}");
    assert_eq!(macs[0], macs[1], "xbr and its SVIs have the router MAC");
    let interfaces = json("interfaces");
    assert_eq!(
        find_by(&interfaces, "interface", "vlan10")["port"],
        "xcpu10i",
        "{interfaces}"
    );
    let routed = get("routed");
    let routed: u64 = routed
        .trim_start_matches("fast path: ")
        .trim_end_matches(" IPv4")
        .parse()
        .unwrap_or_else(|_| panic!("{routed}\n{console}"));
    assert!(routed > 0, "nothing routed by the fast path\n{console}");
    // Nothing the fast path routed entered the bridge with the bridge's own MAC.
    assert_eq!(get("own-source"), "0", "{console}");
    assert_eq!(
        get("svi-veths"),
        "0",
        "veth SVI ports of bridged VLANs\n{console}"
    );

    // An SVI follows its VLAN between the backends at runtime; back on the fast path, VLAN
    // 40 leaves no CPU port and no bridge VLAN behind, and its SVI is a veth again.
    assert_eq!(get("after-veth"), "1 0 0", "{console}");
    for suffix in ["-bridged", "-veth"] {
        for dst in ["10.0.40.254", "10.0.20.4"] {
            assert_eq!(
                get(&format!("ping-h5-{dst}{suffix}")),
                "ok",
                "VLAN 40 {suffix}\n{console}"
            );
        }
    }

    // What an operator undid by hand (`bridge vlan del`, VLAN filtering off) is put back.
    assert_eq!(
        port_vlans_in(&json("vlans-restored"), "swp1"),
        BTreeMap::from([(10, untagged.clone())]),
        "{console}"
    );
    assert_eq!(get("xbr-filtering"), "vlan_filtering 1", "{console}");
    // The static entry that moved from VLAN 10 to VLAN 20 of swp2 is only in VLAN 20.
    let swp2_fdb = json("swp2-fdb");
    let moved: Vec<_> = swp2_fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == "02:00:00:00:00:98")
        .map(|e| (e["vlan"].as_u64(), e["state"].as_str()))
        .collect();
    assert_eq!(moved, [(Some(20), Some("static"))], "{swp2_fdb}");

    // Route offload flags, as the driver set them and the kernel reported them.
    let routes = json("routes");
    let hardware = |prefix: &str| find_by(&routes, "prefix", prefix)["hw"].clone();
    assert_eq!(
        hardware("198.51.100.0/24"),
        "trap",
        "{}\n{console}",
        get("kernel-routes")
    );
    assert_eq!(hardware("203.0.113.0/24"), "offload-failed", "{routes}");

    let h1_mac = get("h1-mac");
    let h1_mac = h1_mac.split_whitespace().nth(1).unwrap();
    let fdb = json("xnos-fdb");
    assert!(
        fdb.as_array().unwrap().iter().any(|e| e["mac"] == h1_mac
            && e["vlan"] == 10
            && e["port"] == "swp1"
            && e["learned-by"] == "bridge"),
        "h1 ({h1_mac}) learned by the bridge in VLAN 10: {fdb}\n{console}"
    );
}
