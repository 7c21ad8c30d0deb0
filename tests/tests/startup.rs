//! End-to-end tests of xnosd's start: the default pin directory works where bpffs is not
//! mounted, and every way a start can fail (or be stopped) leaves nothing behind: no API
//! socket or `.starting` file, no pins, no bpffs mount, no program on a port.
//!
//! Each xnosd runs in a private mount namespace (`ip netns exec` makes one, with a fresh
//! /sys; `unshare -m` one with the host's /sys) with a shell that looks at the mounts after
//! xnosd is gone, so the host's /sys/fs/bpf is never touched.

use std::{path::PathBuf, process::Command};

use xnos_tests::{Topology, binary, require_root, unique_name};

const CONFIG: &str = r#"
[[port]]
name = "swp1"
mode = "access"
vlan = 10
"#;

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
    /// (there was none before), /sys/fs/bpf as before, no XDP program on the port.
    fn assert_nothing_left(&self, what: &str) {
        let context = format!("{what}\nreport:\n{}\nlog:\n{}", self.report, self.log);
        assert_eq!(self.get("files").trim(), "", "files left: {context}");
        assert_eq!(self.get("mounts"), "0", "bpffs left mounted: {context}");
        assert_eq!(self.get("fs"), "sysfs", "/sys/fs/bpf changed: {context}");
        assert_eq!(self.get("xdp"), "0", "XDP left attached: {context}");
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
        std::fs::write(dir.join("xnos.toml"), CONFIG).unwrap();
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
    }
}
