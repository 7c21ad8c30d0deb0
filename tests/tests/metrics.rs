//! Observability: the exporter's output passes `promtool check metrics`, the dashboard's
//! and alert rules' PromQL is valid and only uses exported metrics, and a real Prometheus
//! server scraping a switch with traffic flowing gets data for the dashboard's queries.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xnos_tests::{Config, Daemon, Netns, Topology, http_get, require_root};

const METRICS: &str = "127.0.0.1:9417";
/// swp1 and swp2 in VLAN 10, swp3 in VLAN 20, an SVI in each.
fn config() -> Config {
    Config::access_ports(&[10, 10, 20])
        .svi(10, &["10.0.10.1/24"])
        .svi(20, &["10.0.20.1/24"])
}

fn dashboards() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards"))
}

/// Every PromQL expression of the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(dashboards().join("xnos-switch.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$__range", "1h")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("xnos_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn setup() -> (Topology, Daemon) {
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    topo.switch.ip(&["link", "set", "lo", "up"]).unwrap();
    let daemon =
        Daemon::start_with(&topo.switch, &config(), &["--metrics-listen", METRICS]).unwrap();
    for (i, host) in topo.hosts.iter().enumerate() {
        let vlan = if i < 2 { 10 } else { 20 };
        host.add_address_via(
            &format!("10.0.{vlan}.{}/24", i + 2),
            &format!("10.0.{vlan}.1"),
        )
        .unwrap();
    }
    (topo, daemon)
}

// What this shows: a running xnosd's /metrics passes promtool, and the dashboard and the
// alert rules are valid PromQL using only metrics xnosd exports.
#[test]
fn exported_metrics_pass_promtool_and_cover_dashboard_and_alerts() {
    require_root!();
    let (topo, _daemon) = setup();
    assert!(topo.hosts[0].ping("10.0.10.3", 2) && topo.hosts[0].ping("10.0.20.4", 2));
    let metrics = http_get(&topo.switch, METRICS, "/metrics").unwrap();
    assert!(
        metrics.contains("xnos_routed_packets_total{family=\"ipv4\"}"),
        "{metrics}"
    );

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let problems =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && problems.trim().is_empty(),
        "promtool: {problems}"
    );

    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10);
    let alerts = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let used = metric_names(&(queries.join("\n") + &alerts));
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");

    // promtool validates PromQL in rule files: check the dashboard's as recording rules.
    let dir = std::env::temp_dir().join(xnos_tests::unique_name("xnos-rules-"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: xnos:dashboard:{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    std::fs::write(dir.join("dashboard.yml"), rules).unwrap();
    for file in [dir.join("dashboard.yml"), dashboards().join("alerts.yml")] {
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(dashboards().join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A Prometheus server in `ns`, scraping xnosd every second; killed on drop.
struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(ns: &Netns) -> Self {
        let dir = std::env::temp_dir().join(xnos_tests::unique_name("xnos-prom-"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: xnos\n    static_configs:\n      - targets: [\"{METRICS}\"]\n"
            ),
        )
        .unwrap();
        let child = ns
            .command("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; cargo xtask setup installs it)");
        Self { child, dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(ns: &Netns, q: &str) -> Vec<serde_json::Value> {
    match http_get(
        ns,
        "127.0.0.1:9090",
        &format!("/api/v1/query?query={}", encode(q)),
    ) {
        Ok(body) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

// What this shows: a real Prometheus server scrapes a running xnosd while traffic flows,
// and the dashboard's main queries return data.
#[test]
fn prometheus_scrapes_the_switch_and_dashboard_queries_return_data() {
    require_root!();
    let (topo, _daemon) = setup();
    let _prometheus = Prometheus::start(&topo.switch);
    let mut ping = topo.hosts[0]
        .ns
        .command("ping")
        .args(["-i", "0.2", "-c", "60", "10.0.20.4"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Enough scrapes for rate() over the last minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = query(&topo.switch, "count_over_time(xnos_build_info[1m])");
        if samples
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<u32>().ok())
            >= Some(4)
        {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped xnosd");
        std::thread::sleep(Duration::from_millis(500));
    }
    let main = [
        "Port traffic in (bits/s)",
        "Drops by port and reason (packets/s)",
        "Flooding per VLAN (packets/s)",
        "Table occupancy",
        "Routed packets (packets/s)",
        "Module health",
    ];
    let text = std::fs::read_to_string(dashboards().join("xnos-switch.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    for title in main {
        let panel = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let expr = panel["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        let result = query(&topo.switch, &expr);
        assert!(
            !result.is_empty(),
            "panel {title:?}: {expr} returned nothing"
        );
    }
    let routed = query(
        &topo.switch,
        "sum(rate(xnos_routed_packets_total{family=\"ipv4\"}[1m]))",
    );
    let rate: f64 = routed[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(rate > 0.0, "routed traffic not visible in Prometheus");
    let _ = ping.kill();
    let _ = ping.wait();
}

// What this shows: `xnos show counters` reports per-port rates of live traffic, and
// `--watch` refreshes in place.
#[test]
fn show_counters_reports_rates_and_watch_refreshes() {
    require_root!();
    let (topo, daemon) = setup();
    let mut ping = topo.hosts[0]
        .ns
        .command("ping")
        .args(["-i", "0.05", "-c", "100", "10.0.10.3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rows: serde_json::Value = serde_json::from_str(
        &daemon
            .xnos(&["show", "counters", "--json", "--interval", "1"])
            .unwrap(),
    )
    .unwrap();
    let swp1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == "swp1")
        .unwrap();
    // 20 echo requests a second arrive on swp1 (give or take scheduling).
    let pps = swp1["rx-pps"].as_f64().unwrap();
    assert!((5.0..100.0).contains(&pps), "rx rate {pps} pps: {rows}");
    let swp3 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == "swp3")
        .unwrap();
    assert_eq!(swp3["rx-pps"], 0.0);
    let watch = daemon
        .xnos(&[
            "show",
            "counters",
            "--watch",
            "--count",
            "2",
            "--interval",
            "0.2",
        ])
        .unwrap();
    assert_eq!(watch.matches("\x1b[H\x1b[2J").count(), 2, "{watch:?}");
    assert!(
        watch.contains("RX-PPS") && watch.contains("swp1"),
        "{watch}"
    );
    let _ = ping.kill();
    let _ = ping.wait();
}
