//! End-to-end tests of xnosd's start: the default pin directory works where bpffs is not
//! mounted, and every way a start can fail (or be stopped) leaves nothing behind: no API
//! socket or `.starting` file, no pins, no bpffs mount; a program on a port stays only
//! where a stop would keep it (xnosd had put it there, and it forwards).
//!
//! Each xnosd runs in a private mount namespace (`ip netns exec` makes one, with a fresh
//! /sys; `unshare -m` one with the host's /sys) with a shell that looks at the mounts after
//! xnosd is gone, so the host's /sys/fs/bpf is never touched.

use std::{path::PathBuf, process::Command};

use xnos_tests::{Config, Daemon, Topology, binary, require_root, unique_name};

/// One access port, swp1 in VLAN 10.
fn config() -> Config {
    Config::new().access("swp1", 10)
}

/// Starts xnosd with its arguments, optionally sends it SIGTERM after a delay (seconds),
/// waits for it, and reports what is left: its exit status, the bpffs mounts, the
/// filesystem on /sys/fs/bpf and the files in the test directory.
const HARNESS: &str = r#"
xnosd=$1; dir=$2; ready_check=$3; kill_after=$4; shift 4
"$xnosd" "$@" >>"$dir/log" 2>&1 &
pid=$!
if [ "$ready_check" = yes ]; then
    i=0
    while [ ! -S "$dir/xnosd.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    echo "ready=$([ -S "$dir/xnosd.sock" ] && echo yes || echo no)"
    echo "running-fs=$(stat -f -c %T /sys/fs/bpf)"
    echo "running-pins=$(ls /sys/fs/bpf/xnos/progs 2>/dev/null | tr '\n' ' ')"
    echo "running-xdp=$(ip -d link show dev swp1 | grep -c prog/xdp)"
fi
if [ -n "$kill_after" ]; then sleep "$kill_after"; kill -TERM $pid; fi
wait $pid
echo "status=$?"
echo "mounts=$(grep -c ' bpf ' /proc/self/mounts)"
echo "fs=$(stat -f -c %T /sys/fs/bpf)"
echo "files=$(ls -A "$dir" | grep -v -e '^log$' -e '^xnos.toml$' -e '^busy$' | tr '\n' ' ')"
echo "xdp=$(ip -d link show dev swp1 | grep -c prog/xdp)"
"#;

/// Where the harness runs xnosd: the switch namespace's network, and a private mount
/// namespace with a fresh /sys (`ip netns exec`) or with the host's (`unshare -m`).
#[derive(Clone, Copy)]
enum Sys {
    Fresh,
    Host,
}

struct Run {
    report: String,
    log: String,
}

impl Run {
    fn get(&self, key: &str) -> &str {
        self.report
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key} in report: {}\nlog: {}", self.report, self.log))
    }

    /// Nothing left behind: no socket files or pins in the directory, no bpffs mount
    /// (there was none before), /sys/fs/bpf as before. (The programs a start put on the
    /// ports stay, as after any stop: see `xdp`.)
    fn assert_nothing_left(&self, what: &str) {
        let context = format!("{what}\nreport:\n{}\nlog:\n{}", self.report, self.log);
        assert_eq!(self.get("files").trim(), "", "files left: {context}");
        assert_eq!(self.get("mounts"), "0", "bpffs left mounted: {context}");
        assert_eq!(self.get("fs"), "sysfs", "/sys/fs/bpf changed: {context}");
    }
}

struct Harness {
    topo: Topology,
    dir: PathBuf,
}

impl Harness {
    fn new() -> Self {
        let topo = Topology::new(&["swp1"]).unwrap();
        let dir = std::env::temp_dir().join(unique_name("xnos-start"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("xnos.toml"), config()).unwrap();
        Self { topo, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Runs xnosd (config and socket in the test directory, then `args`) in the harness.
    fn run(&self, sys: Sys, ready_check: bool, kill_after: &str, args: &[&str]) -> Run {
        let mut command = match sys {
            Sys::Fresh => self.topo.switch.command("sh"),
            Sys::Host => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "nsenter"])
                    .arg(format!("--net=/run/netns/{}", self.topo.switch.name()))
                    .arg("sh");
                c
            }
        };
        let output = command
            .args(["-c", HARNESS, "sh"])
            .arg(binary("xnosd").unwrap())
            .arg(&self.dir)
            .arg(if ready_check { "yes" } else { "no" })
            .arg(kill_after)
            .args(["--config", &self.path("xnos.toml")])
            .args(["--socket", &self.path("xnosd.sock")])
            .args(args)
            .output()
            .unwrap();
        Run {
            report: String::from_utf8_lossy(&output.stdout).into_owned(),
            log: std::fs::read_to_string(self.dir.join("log")).unwrap_or_default(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// What this shows: with bpffs mounted nowhere, the default pin directory works: xnosd
// mounts bpffs on /sys/fs/bpf (not on the pin directory), pins there and forwards; stopped,
// it leaves /sys/fs/bpf as it found it. Both with `ip netns exec`'s fresh /sys and with
// the host's /sys (in a private mount namespace).
#[test]
fn the_default_pin_dir_works_without_bpffs_and_is_gone_after_a_stop() {
    require_root!();
    let harness = Harness::new();
    for sys in [Sys::Fresh, Sys::Host] {
        let run = harness.run(sys, true, "0", &[]);
        assert_eq!(run.get("ready"), "yes", "{}\n{}", run.report, run.log);
        assert_eq!(run.get("running-fs"), "bpf_fs", "{}", run.report);
        assert!(
            run.get("running-pins").contains("xnos_ingress"),
            "no pinned ingress program: {}",
            run.report
        );
        assert_eq!(run.get("running-xdp"), "1", "{}", run.report);
        assert_eq!(run.get("status"), "0", "{}", run.log);
        run.assert_nothing_left("after a stop");
        // The program stays on the port, forwarding, for the next xnosd.
        assert_eq!(run.get("xdp"), "1", "{}", run.report);
    }
}

// What this shows: a metrics address already in use fails the start with a clear error,
// and the API socket bound until then (`.starting`) is gone.
#[test]
fn a_metrics_address_in_use_fails_the_start_leaving_nothing() {
    require_root!();
    let harness = Harness::new();
    let busy = harness
        .topo
        .switch
        .enter(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let run = harness.run(Sys::Host, false, "", &["--metrics-listen", &addr]);
    assert_eq!(run.get("status"), "1", "{}", run.log);
    assert!(
        run.log.contains(&format!("metrics address {addr}")),
        "{}",
        run.log
    );
    run.assert_nothing_left("after the metrics address failed");
    assert_eq!(
        run.get("xdp"),
        "0",
        "attached before failing: {}",
        run.report
    );
}

// What this shows: a pin directory that cannot be made fails the start naming it and
// leaves nothing: not the socket, not the directories made on the way, and not the bpffs
// xnosd had mounted on /sys/fs/bpf for it.
#[test]
fn an_invalid_pin_dir_fails_the_start_leaving_nothing() {
    require_root!();
    let harness = Harness::new();
    std::fs::write(harness.dir.join("busy"), "a file, not a directory").unwrap();
    let under_a_file = harness.path("busy/pins");
    // Too long a name: bpffs is mounted on /sys/fs/bpf before mkdir fails.
    let too_long = format!("/sys/fs/bpf/{}", "x".repeat(300));
    for (sys, pin_dir) in [
        (Sys::Host, under_a_file.as_str()),
        (Sys::Host, "/proc/xnos"),
        (Sys::Host, &too_long),
        (Sys::Fresh, &too_long),
    ] {
        let run = harness.run(sys, false, "", &["--pin-dir", pin_dir]);
        assert_eq!(run.get("status"), "1", "{}", run.log);
        assert!(
            run.log.contains(&format!("pin directory {pin_dir}")),
            "{}",
            run.log
        );
        run.assert_nothing_left(&format!("after pin directory {pin_dir} failed"));
        assert_eq!(
            run.get("xdp"),
            "0",
            "attached before failing: {}",
            run.report
        );
    }
}

// What this shows: a second xnosd on the socket of a live one refuses, naming the live
// one's pid, and leaves its socket alone: the live one still answers.
#[test]
fn a_second_xnosd_on_a_live_socket_refuses_and_leaves_it() {
    require_root!();
    let topo = Topology::new(&["swp1"]).unwrap();
    let live = Daemon::start(&topo.switch, &config()).unwrap();
    let second = topo
        .switch
        .command(binary("xnosd").unwrap().to_str().unwrap())
        .arg("--config")
        .arg(live.config_path())
        .arg("--socket")
        .arg(&live.socket)
        .arg("--pin-dir")
        .arg(live.dir.join("bpf2"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "another xnosd is serving {}, pid {}",
        live.socket.display(),
        live.pid().unwrap()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        live.socket.exists(),
        "the live instance's socket was removed"
    );
    live.xnos(&["show", "ports"]).unwrap();
    assert!(topo.xdp_attached("swp1").unwrap());
}

// What this shows: SIGTERM at any moment of the start (before the datapath is loaded,
// while it loads, while xnosd waits to be ready) stops xnosd cleanly (exit 0, not killed
// by the signal) and leaves nothing but, once it got that far, its program on the port,
// as any stop does (whether it got that far depends on the delay, so `xdp` is not read).
#[test]
fn sigterm_while_starting_leaves_nothing() {
    require_root!();
    let harness = Harness::new();
    for delay in ["0.05", "0.1", "0.2", "0.4"] {
        let pins = harness.path("bpf");
        let run = harness.run(Sys::Host, false, delay, &["--pin-dir", &pins]);
        assert_eq!(
            run.get("status"),
            "0",
            "SIGTERM after {delay} s: {}",
            run.log
        );
        run.assert_nothing_left(&format!("after SIGTERM at {delay} s"));
    }
}
