//! `cargo xtask demo`: three hosts on an xnos switch in network namespaces.
//!
//!     h1 10.0.10.2 ── swp1 (access VLAN 10) ┐
//!     h2 10.0.10.3 ── swp2 (access VLAN 10) ├─ xnosd (XDP on every port),
//!     h3 10.0.20.2 ── swp3 (access VLAN 20) ┘   SVIs 10.0.10.1 and 10.0.20.1
//!
//! h1 and h2 share VLAN 10 and are switched; h3 is in VLAN 20 and reached through the
//! SVIs, routed by the fast path. Everything is removed at the end, also on error.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{output, status, step};

const SWITCH: &str = "xnos-demo-sw";
const HOSTS: [(&str, &str, &str, &str); 3] = [
    ("xnos-demo-h1", "swp1", "10.0.10.2/24", "10.0.10.1"),
    ("xnos-demo-h2", "swp2", "10.0.10.3/24", "10.0.10.1"),
    ("xnos-demo-h3", "swp3", "10.0.20.2/24", "10.0.20.1"),
];
const CONFIG: &str = include_str!("../demo.toml");

/// Namespaces and the daemon of the demo; all gone when dropped.
struct Lab {
    daemon: Option<Child>,
    dir: PathBuf,
}

impl Lab {
    fn clean_namespaces() {
        for ns in std::iter::once(SWITCH).chain(HOSTS.iter().map(|h| h.0)) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Self::clean_namespaces();
        let _ = std::fs::remove_dir_all(&self.dir);
        println!("==> cleaned up: daemon stopped, namespaces deleted");
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    output(Command::new("ip").args(args))
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, cmd]).args(args);
    command
}

fn show(title: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("\n$ {title}");
    print!("{}", output(cmd)?);
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    let xnosd = target.join("xnosd");
    let xnos = target.join("xnos");
    Lab::clean_namespaces();
    let dir = std::env::temp_dir().join("xnos-demo");
    std::fs::create_dir_all(&dir)?;
    let mut lab = Lab {
        daemon: None,
        dir: dir.clone(),
    };

    step("creating the topology: namespaces xnos-demo-{sw,h1,h2,h3}, veth ports swp1..3");
    ip(&["netns", "add", SWITCH])?;
    for (ns, port, address, gateway) in HOSTS {
        ip(&["netns", "add", ns])?;
        ip(&[
            "-n", SWITCH, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", ns, "addr", "add", address, "dev", "eth0"])?;
        // The switch XDP-redirects into this veth pair: its receiving end needs GRO (NAPI),
        // and the host must put real checksums on the wire (no veth TX offload).
        status(
            in_ns(ns, "ethtool", &["-K", "eth0", "gro", "on", "tx", "off"]).stdout(Stdio::null()),
        )?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", gateway])?;
        ip(&["-n", SWITCH, "link", "set", port, "up"])?;
    }

    let config = dir.join("xnos.toml");
    std::fs::write(&config, CONFIG)?;
    let socket = dir.join("xnosd.sock");
    step(&format!(
        "starting xnosd with this config ({}):",
        config.display()
    ));
    print!("{CONFIG}");
    let log = std::fs::File::create(dir.join("xnosd.log"))?;
    lab.daemon = Some(
        in_ns(SWITCH, xnosd.to_str().context("path")?, &[])
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--pin-dir")
            .arg(dir.join("bpf"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting xnosd")?,
    );
    let cli = || {
        let mut cmd = Command::new(&xnos);
        cmd.arg("--socket").arg(&socket);
        cmd
    };
    // xnosd makes its socket once every port has its fast path: then traffic may start.
    if let Err(e) = output(cli().args(["wait-ready", "--timeout", "20"])) {
        let log = std::fs::read_to_string(dir.join("xnosd.log")).unwrap_or_default();
        bail!("{e:#}\n{log}");
    }

    step("traffic through the switch");
    show(
        "ip netns exec xnos-demo-h1 ping -c 3 10.0.10.3    # h2, same VLAN: switched",
        &mut in_ns(HOSTS[0].0, "ping", &["-c", "3", "-i", "0.2", "10.0.10.3"]),
    )?;
    show(
        "ip netns exec xnos-demo-h1 ping -c 3 10.0.20.2    # h3, VLAN 20: routed (ttl 63)",
        &mut in_ns(HOSTS[0].0, "ping", &["-c", "3", "-i", "0.2", "10.0.20.2"]),
    )?;

    step("what the switch did (xnos talks to xnosd over its API socket)");
    show("xnos show vlans", cli().args(["show", "vlans"]))?;
    show("xnos show ports", cli().args(["show", "ports"]))?;
    show("xnos show fdb", cli().args(["show", "fdb"]))?;
    show("xnos show routes", cli().args(["show", "routes"]))?;
    show(
        "xnos trace --port swp1 --dst-ip 10.0.20.2    # what would the switch do?",
        cli().args(["trace", "--port", "swp1", "--dst-ip", "10.0.20.2"]),
    )?;

    step("proof that XDP forwarded it: programs on every port, no Linux bridge");
    for (_, port, _, _) in HOSTS {
        let link = ip(&["-n", SWITCH, "-d", "link", "show", "dev", port])?;
        let prog = link
            .split_whitespace()
            .skip_while(|w| *w != "prog/xdp")
            .nth(2)
            .unwrap_or("(none)");
        println!("{port}: XDP program id {prog}");
    }
    let bridges = ip(&["-n", SWITCH, "-o", "link", "show", "type", "bridge"])?;
    println!(
        "bridges in the switch namespace: {}",
        if bridges.trim().is_empty() {
            "none"
        } else {
            bridges.trim()
        }
    );
    drop(lab);
    Ok(())
}
