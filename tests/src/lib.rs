//! Test topology helpers: network namespaces, veth ports, a real `xnosd` per switch, and
//! raw AF_PACKET sockets for crafted (including VLAN-tagged) frames.
//!
//! Everything is RAII: dropping a [`Netns`] deletes it (and with it its veths), dropping a
//! [`Daemon`] stops the process. Names carry the process id and a counter, so tests can
//! run in parallel and never collide with anything else on the machine.

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use xnos::mac::MacAddr;

pub mod bench;
mod config;
pub mod packets;
mod rig;
pub mod traffic;
pub use config::Config;
pub use rig::{DatapathRig, nexthop, nexthop_group};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, e.g. `xt1234-7`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that needs root runs: true as root; without root, false (the test
/// skips), except under CI (`CI` set in the environment), where a skipped test would count
/// as passed without having run anything: there the test fails.
pub fn needs_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "this test needs root (network namespaces, BPF) and CI is set: run the suite as \
             root instead of letting it pass without running"
        );
    }
    eprintln!("skipping: needs root (network namespaces, BPF)");
    false
}

/// Skip (return early from) a test that needs root; fail it under CI (see [`needs_root`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::needs_root() {
            return;
        }
    };
}

/// Run a command, failing with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd}"))?;
    if !output.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&run("ip", &full)?.stdout).into_owned())
    }

    /// A command run inside the namespace (`ip netns exec`), not checked.
    pub fn command(&self, cmd: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, cmd])
            .stdin(Stdio::null());
        command
    }

    /// Run a command inside the namespace, failing with its stderr if it fails.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command(cmd).args(args).output()?;
        if !output.status.success() {
            bail!(
                "{cmd} {} in {} failed: {}{}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Run `f` with the calling thread inside this namespace; sockets opened there stay
    /// in it. The thread returns to its own namespace afterwards.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> anyhow::Result<R> {
        let home = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening netns {}", self.name))?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET).context("setns into test netns")?;
        let result = f();
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET).expect("returning to own netns");
        Ok(result)
    }

    /// The ifindex of `ifname` inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> anyhow::Result<u32> {
        let out = self.ip(&["-o", "link", "show", "dev", ifname])?;
        out.split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .with_context(|| format!("no ifindex for {ifname} in {}", self.name))
    }

    pub fn mac(&self, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", ifname])?;
        let mac = out
            .split("link/ether ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("no MAC for {ifname}"))?;
        Ok(mac
            .parse::<MacAddr>()
            .with_context(|| format!("MAC of {ifname}"))?
            .0)
    }

    /// A veth pair `name` <-> `peer`, both in this namespace (down).
    pub fn veth(&self, name: &str, peer: &str) -> anyhow::Result<()> {
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", peer])?;
        Ok(())
    }

    /// A veth pair `name` (here) <-> `peer` (in `other`), both down: a cable between two
    /// namespaces.
    pub fn cable(&self, name: &str, other: &Netns, peer: &str) -> anyhow::Result<()> {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            other.name(),
        ])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

pub fn format_mac(mac: [u8; 6]) -> String {
    MacAddr(mac).to_string()
}

/// A host: its own namespace with `eth0`, cabled to port `port` of a switch namespace.
pub struct Host {
    pub ns: Netns,
    pub port: String,
    pub mac: [u8; 6],
}

impl Host {
    /// Create the host and a veth pair `eth0` (host) <-> `port` (in `switch`).
    /// GRO is enabled on eth0 so that the switch can XDP-redirect into the pair.
    pub fn new(switch: &Netns, port: &str, mac: [u8; 6]) -> anyhow::Result<Self> {
        let ns = Netns::new("xh")?;
        switch.cable(port, &ns, "eth0")?;
        ns.ip(&["link", "set", "eth0", "address", &format_mac(mac)])?;
        // No IPv6 autoconf chatter on the wire we observe.
        ns.exec("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        // GRO on: the switch XDP-redirects into this veth pair, which needs NAPI on this
        // end. TX checksum offload off: a veth would hand XDP packets whose checksum is
        // still to be filled in, and a redirected frame arrives with it unfinished.
        ns.exec("ethtool", &["-K", "eth0", "gro", "on", "tx", "off"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        switch.ip(&["link", "set", port, "up"])?;
        Ok(Self {
            ns,
            port: port.into(),
            mac,
        })
    }

    pub fn add_address(&self, cidr: &str) -> anyhow::Result<()> {
        self.ns.ip(&["addr", "add", cidr, "dev", "eth0"])?;
        Ok(())
    }

    /// `cidr` on eth0 and a default route through `gateway`.
    pub fn add_address_via(&self, cidr: &str, gateway: &str) -> anyhow::Result<()> {
        self.add_address(cidr)?;
        self.ns.ip(&["route", "add", "default", "via", gateway])?;
        Ok(())
    }

    /// `ping -c count` to `ip`; true if every reply came back.
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.ns
            .command("ping")
            .args(["-c", &count.to_string(), "-i", "0.2", "-W", "1", "-q", ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Ping `ip` until it answers (a change may take a moment to reach the datapath);
    /// false if it never does within 10 seconds.
    pub fn reachable(&self, ip: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping(ip, 1) {
                return true;
            }
        }
        false
    }

    /// A raw socket on this host's eth0.
    pub fn socket(&self) -> anyhow::Result<PacketSocket> {
        self.ns.enter(|| PacketSocket::bind("eth0"))?
    }
}

/// The switch's namespace and the hosts cabled to it.
pub struct Topology {
    pub hosts: Vec<Host>,
    pub switch: Netns,
}

impl Topology {
    /// A switch with one host per entry of `ports`; host `i` gets MAC 02:00:00:00:<i+1>:01.
    pub fn new(ports: &[&str]) -> anyhow::Result<Self> {
        let switch = Netns::new("xs")?;
        let mut hosts = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            hosts.push(Host::new(&switch, port, [2, 0, 0, 0, i as u8 + 1, 1])?);
        }
        Ok(Self { hosts, switch })
    }

    /// True if no Linux bridge exists in the switch namespace.
    pub fn no_bridge(&self) -> anyhow::Result<bool> {
        Ok(self
            .switch
            .ip(&["-o", "link", "show", "type", "bridge"])?
            .trim()
            .is_empty())
    }

    /// True if an XDP program is attached to `port`.
    pub fn xdp_attached(&self, port: &str) -> anyhow::Result<bool> {
        let out = self.switch.ip(&["-d", "link", "show", "dev", port])?;
        Ok(out.contains("prog/xdp"))
    }

    /// The names of the TC programs attached (tcx) at the ingress of `port`.
    pub fn tc_programs(&self, port: &str) -> anyhow::Result<Vec<String>> {
        let (_, programs) = self.switch.enter(|| {
            aya::programs::SchedClassifier::query_tcx(port, aya::programs::TcAttachType::Ingress)
        })??;
        Ok(programs
            .iter()
            .filter_map(|p| p.name_as_str().map(String::from))
            .collect())
    }
}

/// The element of a JSON array (`xnos show ... --json`) whose `key` is `value`; panics
/// naming both when there is none.
pub fn find_by(list: &serde_json::Value, key: &str, value: &str) -> serde_json::Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|item| item[key] == value)
        .unwrap_or_else(|| panic!("no {key} {value} in {list}"))
        .clone()
}

/// Locate a binary of the `xnos` package in the target dir of the running executable
/// (test executables live in `<profile>/deps`, tools in `<profile>`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    for candidate in [
        dir.join(name),
        dir.parent().map(|d| d.join(name)).unwrap_or_default(),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found next to {}: build it first (`cargo build -p xnos --bins`; `cargo xtask test` does)",
        exe.display()
    );
}

/// A running xnosd in a switch namespace; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl Daemon {
    /// Start xnosd in `switch` with `config` and wait until it is ready (its API socket
    /// appears only once every configured port has its fast path).
    pub fn start(switch: &Netns, config: &str) -> anyhow::Result<Self> {
        Self::start_with(switch, config, &[])
    }

    /// `start` with extra xnosd arguments (kept across `restart`).
    pub fn start_with(switch: &Netns, config: &str, args: &[&str]) -> anyhow::Result<Self> {
        let mut daemon = Self::launch(switch, config, args, &[])?;
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// Start xnosd without waiting for it, with extra arguments and environment.
    pub fn launch(
        switch: &Netns,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("xnos-{}", switch.name()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("xnos.toml"), config)?;
        std::fs::write(dir.join("args"), args.join("\n"))?;
        Self::spawn(switch, dir, env)
    }

    /// `start` of another instance in the same namespace, with its own directory (config,
    /// socket, pins, log) named by `instance`.
    pub fn start_instance(switch: &Netns, instance: &str, config: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("xnos-{}-{instance}", switch.name()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("xnos.toml"), config)?;
        std::fs::write(dir.join("args"), "")?;
        let mut daemon = Self::spawn(switch, dir, &[])?;
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// Wait until the API socket is there (xnosd is ready then); fails at once, with the
    /// log, if xnosd exits.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("xnosd exited with {status}: {}", self.log());
            }
            if self.socket.exists() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("xnosd did not become ready: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop and start again with the same config file (as `config save` left it).
    pub fn restart(&mut self, switch: &Netns) -> anyhow::Result<()> {
        self.restart_as(switch, "xnosd")
    }

    /// `restart` with another build of xnosd: `xnosd-next` (an upgrade, see the
    /// `next-build` feature), or `xnosd` again.
    pub fn restart_as(&mut self, switch: &Netns, build: &str) -> anyhow::Result<()> {
        self.stop()?;
        let mut fresh = Self::spawn_from(&binary(build)?, switch, self.dir.clone(), &[])?;
        fresh.wait_ready()?;
        let mut old = std::mem::replace(self, fresh);
        // The directory now belongs to the new process.
        old.dir = PathBuf::new();
        Ok(())
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("xnos.toml")
    }

    fn spawn(switch: &Netns, dir: PathBuf, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_from(&binary("xnosd")?, switch, dir, env)
    }

    fn spawn_from(
        xnosd: &Path,
        switch: &Netns,
        dir: PathBuf,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let config_path = dir.join("xnos.toml");
        let socket = dir.join("xnosd.sock");
        // Ready is the socket appearing: one left by a killed run must not look like it.
        let _ = std::fs::remove_file(&socket);
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("xnosd.log"))?;
        let child = switch
            .command(
                xnosd
                    .to_str()
                    .with_context(|| format!("xnosd path {}", xnosd.display()))?,
            )
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--pin-dir")
            .arg(dir.join("bpf"))
            .args(
                std::fs::read_to_string(dir.join("args"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.is_empty()),
            )
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child: Some(child),
            socket,
            dir,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("xnosd.log")).unwrap_or_default()
    }

    /// Run the CLI against this daemon; Err carries stderr.
    pub fn xnos(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(binary("xnos")?)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!(
                "xnos {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// POST `body` (JSON) to the API at `path`, as any HTTP client would; returns the
    /// status code and the body.
    pub fn api_post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<(u16, String)> {
        self.api_request("POST", path, &body.to_string(), None)
    }

    /// GET `path` from the API, as any HTTP client would, waiting at most `wait` for the
    /// answer; returns the status code and the body (chunked answers with their chunk
    /// sizes: check the body with the CLI, which decodes them).
    pub fn api_get(&self, path: &str, wait: Duration) -> anyhow::Result<(u16, String)> {
        self.api_request("GET", path, "", Some(wait))
    }

    /// The socket xnosd answers on before it is ready; renamed to `socket` when it is.
    pub fn starting_socket(&self) -> PathBuf {
        let mut name = self.socket.as_os_str().to_owned();
        name.push(".starting");
        PathBuf::from(name)
    }

    /// `api_get` on the starting socket.
    pub fn starting_api_get(&self, path: &str, wait: Duration) -> anyhow::Result<(u16, String)> {
        api_request(&self.starting_socket(), "GET", path, "", Some(wait))
    }

    fn api_request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        wait: Option<Duration>,
    ) -> anyhow::Result<(u16, String)> {
        api_request(&self.socket, method, path, body, wait)
    }

    /// Kill xnosd with SIGKILL, as a crash would, and wait for it to be gone.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Start again with the same directory after `crash` (or `stop`).
    pub fn start_again(&mut self, switch: &Netns) -> anyhow::Result<()> {
        self.launch_again(switch)?;
        self.wait_ready()
    }

    /// `start_again` without waiting for xnosd to be ready.
    pub fn launch_again(&mut self, switch: &Netns) -> anyhow::Result<()> {
        self.launch_again_from(switch, &binary("xnosd")?)
    }

    /// `start_again` with another xnosd binary, as an upgrade (or downgrade) would.
    pub fn start_again_from(&mut self, switch: &Netns, xnosd: &Path) -> anyhow::Result<()> {
        self.launch_again_from(switch, xnosd)?;
        self.wait_ready()
    }

    fn launch_again_from(&mut self, switch: &Netns, xnosd: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "xnosd is still running");
        let mut fresh = Self::spawn_from(xnosd, switch, self.dir.clone(), &[])?;
        self.child = fresh.child.take();
        fresh.dir = PathBuf::new();
        Ok(())
    }

    /// The process id of xnosd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Any `xnos ... --json` command's output as JSON.
    pub fn json_raw(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.xnos(args)?)?)
    }

    /// The API's view of `table` (`GET /v1/<table>`: ports, vlans, fdb, routes, ...), the
    /// typed state `xnos show` renders. (`show --json` flattens it into the table's
    /// columns; tests of what xnosd knows read the view.)
    pub fn json(&self, table: &str) -> anyhow::Result<serde_json::Value> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = xnos::api::Client::new(&self.socket);
        runtime
            .block_on(client.get(&format!("/v1/{table}")))
            .with_context(|| format!("GET /v1/{table}"))
    }

    /// The counters of one port from `GET /v1/ports`.
    pub fn counters(&self, port: &str) -> anyhow::Result<serde_json::Value> {
        let ports = self.json("ports")?;
        ports
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == port))
            .map(|p| p["counters"].clone())
            .with_context(|| format!("port {port} not in show ports"))
    }

    /// Wait until `GET /v1/fdb` has `mac` in `vlan` on `port`.
    pub fn wait_fdb(
        &self,
        vlan: u16,
        mac: [u8; 6],
        port: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let mac = format_mac(mac);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fdb = self.json("fdb")?;
            if let Some(entry) = fdb.as_array().and_then(|a| {
                a.iter()
                    .find(|e| e["mac"] == mac.as_str() && e["vlan"] == vlan && e["port"] == port)
            }) {
                return Ok(entry.clone());
            }
            if Instant::now() > deadline {
                bail!("{mac} never appeared on {port} in VLAN {vlan}: {fdb}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Inject a fault (a panic) into `module` and wait until the supervisor has it running
    /// again (its restart count went up). Needs xnosd built with `fault-injection`, as
    /// `cargo xtask test` builds it.
    pub fn fault(&self, module: &str) -> anyhow::Result<()> {
        let restarts = |modules: &serde_json::Value| {
            let row = &modules.as_array()?.iter().find(|m| m["key"] == module)?["row"];
            Some((row["restarts"].as_u64()?, row["state"] == "running"))
        };
        let (before, _) = restarts(&self.json("modules")?)
            .with_context(|| format!("no module {module} in xnosd"))?;
        self.xnos(&["inject-fault", module])
            .with_context(|| format!("injecting a fault into {module}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The API itself may be the one restarting: errors are retried.
            if let Ok(modules) = self.json("modules")
                && let Some((now, true)) = restarts(&modules)
                && now > before
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("module {module} not running again 30 s after its fault");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop with SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("xnosd ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP/1.1 request on the API socket at `socket`; the status code and the body.
fn api_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
    wait: Option<Duration>,
) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(wait)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: xnosd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// An AF_PACKET socket on one interface. Received frames get their VLAN tag back: the
/// kernel strips it into metadata (PACKET_AUXDATA), and tests want the wire bytes.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn bind(ifname: &str) -> anyhow::Result<Self> {
        let name = CString::new(ifname)?;
        // SAFETY: plain syscalls on a fresh fd; sockaddr_ll fully initialised.
        unsafe {
            let raw = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ALL.to_be()),
            );
            if raw < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let ifindex = libc::if_nametoindex(name.as_ptr());
            if ifindex == 0 {
                bail!("no interface {ifname}");
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                &one as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_ALL.to_be();
            addr.sll_ifindex = ifindex as i32;
            if libc::bind(
                raw,
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            ) < 0
            {
                return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
            }
            Ok(Self { fd })
        }
    }

    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: frame is a valid buffer of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("send(AF_PACKET)");
        }
        Ok(())
    }

    /// Every frame received within `wait` for which `keep` is true (outgoing frames of
    /// this host are skipped).
    pub fn collect(&self, wait: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(frame) if keep(&frame) => frames.push(frame),
                Some(_) => {}
                None => break,
            }
        }
        frames
    }

    fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().max(1) as i32) };
            if ready <= 0 {
                return None;
            }
            let mut buf = vec![0u8; 65536];
            let mut cmsg = [0u64; 64];
            // SAFETY: sockaddr_ll is plain data, valid when all zero.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: msghdr points at live buffers of the given sizes.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&cmsg);
            // SAFETY: as above.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                continue;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            // SAFETY: walking the control messages the kernel wrote into msg.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux =
                            (libc::CMSG_DATA(c) as *const libc::tpacket_auxdata).read_unaligned();
                        if aux.tp_status & TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12 {
                            let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            let mut tag = tpid.to_be_bytes().to_vec();
                            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                            buf.splice(12..12, tag);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            return Some(buf);
        }
    }
}

/// `GET path` over HTTP/1.0 from inside `ns` (for servers listening on its loopback).
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = ns.enter(|| std::net::TcpStream::connect(addr))??;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

/// A memory field of `/proc/<pid>/status` in KiB (`VmRSS` now, `VmHWM` the peak); panics
/// naming the field and the process when there is none.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The CPU time (user and system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name, in parentheses, may hold spaces: count fields after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of proc(5), 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: plain libc query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// EtherType used by test frames (IEEE "local experimental"), so captures ignore noise.
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// A test frame: `dst`, `src`, optional 802.1Q tag, TEST_ETHERTYPE and `marker` in the
/// payload, padded to the 60-byte minimum.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, marker: u32) -> Vec<u8> {
    let mut frame = Vec::with_capacity(64);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    if let Some(vid) = vlan {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    frame.extend_from_slice(&marker.to_be_bytes());
    frame.resize(frame.len().max(60), 0);
    frame
}

/// Parse a captured test frame: (vlan tag if any, marker), or None if not a test frame.
pub fn parse_test_frame(frame: &[u8]) -> Option<(Option<u16>, u32)> {
    let eth = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let vlan = eth.vlan.as_ref().map(|v| match v {
        etherparse::VlanSlice::SingleVlan(s) => s.vlan_identifier().value(),
        etherparse::VlanSlice::DoubleVlan(d) => d.outer().vlan_identifier().value(),
    });
    let ether_type = match &eth.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e.ether_type(),
        _ => return None,
    };
    let inner_type = eth
        .vlan
        .as_ref()
        .map(|v| match v {
            etherparse::VlanSlice::SingleVlan(s) => s.ether_type(),
            etherparse::VlanSlice::DoubleVlan(d) => d.inner().ether_type(),
        })
        .unwrap_or(ether_type);
    if inner_type.0 != TEST_ETHERTYPE {
        return None;
    }
    let offset = 14 + if vlan.is_some() { 4 } else { 0 };
    let marker = u32::from_be_bytes(frame.get(offset..offset + 4)?.try_into().ok()?);
    Some((vlan, marker))
}

/// The benchmark's own eBPF object (ebpf/xnos-bench-ebpf), built by tests/build.rs; the
/// tests use its `xnos_test_pass`.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xnos-bench"));

/// Another program than xnos's on a port's XDP hook (`xnos_test_pass`, which passes every
/// frame), attached as a BPF link: it goes when this is dropped.
pub struct ForeignXdp {
    _ebpf: aya::Ebpf,
}

impl ForeignXdp {
    pub fn attach(ns: &Netns, port: &str, mode: aya::programs::XdpMode) -> anyhow::Result<Self> {
        let mut ebpf = aya::Ebpf::load(BENCH_OBJECT).context("loading the test object")?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut("xnos_test_pass")
            .context("xnos_test_pass missing")?
            .try_into()?;
        program.load()?;
        ns.enter(|| program.attach(port, mode))??;
        Ok(Self { _ebpf: ebpf })
    }
}

/// Unicast, locally administered source MACs from a fixed seed (xorshift64): the same
/// flood on every run, and no MAC of the topology's hosts among them.
pub struct RandomMacs(pub u64);

impl Iterator for RandomMacs {
    type Item = [u8; 6];

    fn next(&mut self) -> Option<[u8; 6]> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let b = self.0.to_le_bytes();
        Some([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

/// The value of the Prometheus sample `series` (name and labels, as exported).
pub fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    /// Set for the copy of the test binary that runs without root.
    const PROBE: &str = "XNOS_TESTS_ROOT_PROBE";

    // What this shows: a test that needs root, run without it (as nobody), skips and
    // passes outside CI, and fails under CI, where a skip would pass unseen.
    #[test]
    fn without_root_a_test_skips_except_under_ci() {
        if std::env::var_os(PROBE).is_some() {
            require_root!();
            return;
        }
        require_root!();
        let exe = std::env::current_exe().unwrap();
        let run = |ci: bool| {
            let mut cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(&exe)
                .args([
                    "tests::without_root_a_test_skips_except_under_ci",
                    "--exact",
                    "--nocapture",
                ])
                .env(PROBE, "1")
                .env_remove("CI");
            if ci {
                cmd.env("CI", "true");
            }
            let out = cmd.output().expect("running the test binary as nobody");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let (passed, text) = run(false);
        assert!(passed && text.contains("skipping: needs root"), "{text}");
        let (passed, text) = run(true);
        assert!(
            !passed && text.contains("needs root") && text.contains("CI is set"),
            "{text}"
        );
    }
}
