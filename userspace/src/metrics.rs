//! The metrics module: serves `/metrics` for Prometheus. Everything is read at scrape time
//! (per-CPU counter maps summed, StateDb tables counted), so exporting costs the packet
//! path nothing.

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder as _, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use xnos_common::{
    DropReason, FDB_SIZE, MAX_L3_IFACES, MAX_PORTS, NEIGH_SIZE, NHG_SIZE, PuntReason, ROUTES_SIZE,
};

use crate::{
    datapath::StatsReader,
    statedb::{DatapathMode, ModuleState, OperState, RouteKind, State, StateDb},
    supervisor::ModuleCtx,
};

pub struct Metrics {
    db: Arc<StateDb>,
    stats: StatsReader,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

fn int(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new(db: Arc<StateDb>, stats: StatsReader) -> Arc<Self> {
        Arc::new(Self { db, stats })
    }

    /// The current metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let registry = Registry::new();
        self.db.read(|state| {
            self.ports(&registry, state);
            self.vlans(&registry, state);
            self.tables(&registry, state);
            self.l3(&registry, state);
            Self::control_plane(&registry, state);
        });
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    fn ports(&self, registry: &Registry, state: &State) {
        let rx_packets = counter(
            registry,
            "xnos_port_rx_packets_total",
            "Frames received on a switch port.",
            &["port"],
        );
        let rx_bytes = counter(
            registry,
            "xnos_port_rx_bytes_total",
            "Bytes received on a switch port.",
            &["port"],
        );
        let tx_packets = counter(
            registry,
            "xnos_port_tx_packets_total",
            "Frames sent out of a switch port by the fast path.",
            &["port"],
        );
        let tx_bytes = counter(
            registry,
            "xnos_port_tx_bytes_total",
            "Bytes sent out of a switch port by the fast path.",
            &["port"],
        );
        let flooded = counter(
            registry,
            "xnos_port_flooded_packets_total",
            "Frames received on a port and flooded in their VLAN.",
            &["port"],
        );
        let to_kernel = counter(
            registry,
            "xnos_port_to_kernel_packets_total",
            "Frames received on a port and passed to the kernel by the L2 pipeline (control protocols, routed-port traffic not for the router MAC); not L3 punts.",
            &["port"],
        );
        let punted = counter(
            registry,
            "xnos_port_punted_packets_total",
            "Packets received on a port that the L3 fast path punted to the kernel (per-port share of xnos_punted_packets_total).",
            &["port"],
        );
        let learned = counter(
            registry,
            "xnos_fdb_learn_events_total",
            "MAC addresses learned or moved on a port.",
            &["port"],
        );
        let refused = counter(
            registry,
            "xnos_fdb_learn_refused_total",
            "New MAC addresses seen on a port that the full FDB had no room for.",
            &["port"],
        );
        let events_lost = counter(
            registry,
            "xnos_fdb_learn_events_lost_total",
            "Learn events of a port that the full ring to xnosd had no room for (a MAC flood): the entries are in the FDB map, and xnosd reads the map whole when this moves.",
            &["port"],
        );
        let drops = counter(
            registry,
            "xnos_port_drops_total",
            "Frames dropped by the fast path, by reason.",
            &["port", "reason"],
        );
        let up = gauge(
            registry,
            "xnos_port_up",
            "1 if the port's link is operationally up.",
            &["port"],
        );
        let attached = gauge(
            registry,
            "xnos_port_datapath_attached",
            "1 if the port is forwarded, by the fast path (label mode: xdp-native, xdp-generic, tc) or by the kernel bridge (switchdev); 0 with mode none.",
            &["port", "mode"],
        );
        for port in state.config.ports.values() {
            let name = port.name.as_str();
            let link_up = state
                .observed
                .links
                .get(name)
                .is_some_and(|l| l.oper_state == OperState::Up);
            up.with_label_values(&[name]).set(i64::from(link_up));
            let status = state.observed.port_status.get(name);
            let mode = status.map_or(DatapathMode::None, |s| s.datapath);
            attached
                .with_label_values(&[name, mode.name()])
                .set(i64::from(mode != DatapathMode::None));
            let Some(s) = status
                .filter(|s| s.ifindex != 0 && s.datapath != DatapathMode::Switchdev)
                .and_then(|s| self.stats.get(s.stats_slot).ok())
            else {
                continue;
            };
            rx_packets.with_label_values(&[name]).inc_by(s.rx_packets);
            rx_bytes.with_label_values(&[name]).inc_by(s.rx_bytes);
            tx_packets.with_label_values(&[name]).inc_by(s.tx_packets);
            tx_bytes.with_label_values(&[name]).inc_by(s.tx_bytes);
            flooded.with_label_values(&[name]).inc_by(s.flooded);
            to_kernel.with_label_values(&[name]).inc_by(s.to_kernel);
            punted.with_label_values(&[name]).inc_by(s.punted);
            learned.with_label_values(&[name]).inc_by(s.learned);
            refused.with_label_values(&[name]).inc_by(s.learn_refused);
            events_lost
                .with_label_values(&[name])
                .inc_by(s.learn_events_lost);
            for reason in DropReason::ALL {
                drops
                    .with_label_values(&[name, reason.name()])
                    .inc_by(s.drops[reason as usize]);
            }
        }
    }

    fn vlans(&self, registry: &Registry, state: &State) {
        let flooded = counter(
            registry,
            "xnos_vlan_flooded_packets_total",
            "Frames flooded in a VLAN.",
            &["vlan"],
        );
        let fdb = gauge(
            registry,
            "xnos_vlan_fdb_entries",
            "FDB entries (static and learned) of a VLAN.",
            &["vlan"],
        );
        for vid in state.config.vlans.keys() {
            let label = vid.to_string();
            flooded
                .with_label_values(&[&label])
                .inc_by(self.stats.vlan_flooded(*vid).unwrap_or(0));
            let entries = state.config.fdb.keys().filter(|(v, _)| v == vid).count()
                + state
                    .observed
                    .fdb_learned
                    .keys()
                    .filter(|(v, _)| v == vid)
                    .count();
            fdb.with_label_values(&[&label]).set(int(entries));
        }
    }

    fn tables(&self, registry: &Registry, state: &State) {
        let entries = gauge(
            registry,
            "xnos_table_entries",
            "Entries in a fast-path table.",
            &["table"],
        );
        let capacity = gauge(
            registry,
            "xnos_table_capacity",
            "Capacity of a fast-path table.",
            &["table"],
        );
        let d = &state.observed.datapath;
        let fdb = state.config.fdb.len() + state.observed.fdb_learned.len();
        for (table, used, size) in [
            ("fdb", fdb, FDB_SIZE),
            ("ports", d.ports, MAX_PORTS),
            ("routes-v4", d.routes_v4, ROUTES_SIZE),
            ("routes-v6", d.routes_v6, ROUTES_SIZE),
            ("nexthop-groups", d.nexthop_groups, NHG_SIZE),
            ("neighbors", d.neighbors, NEIGH_SIZE),
            ("l3-interfaces", d.l3_interfaces, MAX_L3_IFACES),
        ] {
            entries.with_label_values(&[table]).set(int(used));
            capacity.with_label_values(&[table]).set(i64::from(size));
        }
        let moves = counter(
            registry,
            "xnos_fdb_station_moves_total",
            "Stations seen moving between ports.",
            &[],
        );
        moves.with_label_values::<&str>(&[]).inc_by(d.station_moves);
    }

    fn l3(&self, registry: &Registry, state: &State) {
        let routed = counter(
            registry,
            "xnos_routed_packets_total",
            "Packets routed by the fast path.",
            &["family"],
        );
        let punts = counter(
            registry,
            "xnos_punted_packets_total",
            "Packets the L3 fast path handed to the kernel, by reason.",
            &["reason"],
        );
        let limited = counter(
            registry,
            "xnos_punts_rate_limited_total",
            "Punts dropped by the punt rate limiter.",
            &[],
        );
        if let Ok(s) = self.stats.l3() {
            routed.with_label_values(&["ipv4"]).inc_by(s.routed_v4);
            routed.with_label_values(&["ipv6"]).inc_by(s.routed_v6);
            for reason in PuntReason::ALL {
                punts
                    .with_label_values(&[reason.name()])
                    .inc_by(s.punts[reason as usize]);
            }
            limited
                .with_label_values::<&str>(&[])
                .inc_by(s.punts_rate_limited);
        }
        let routes = gauge(
            registry,
            "xnos_routes",
            "Routes of the kernel FIB mirrored by xnos, by table and protocol.",
            &["table", "protocol"],
        );
        for (key, route) in &state.observed.fib {
            if matches!(route.kind, RouteKind::Unicast | RouteKind::Local) {
                routes
                    .with_label_values(&[key.table.name(), &route.protocol.to_string()])
                    .inc();
            }
        }
        let neighbors = gauge(
            registry,
            "xnos_neighbors",
            "Kernel neighbor entries, by state.",
            &["state"],
        );
        for n in state
            .observed
            .neighbors
            .values()
            .filter(|n| !n.ip.is_multicast())
        {
            neighbors.with_label_values(&[n.state.name()]).inc();
        }
    }

    fn control_plane(registry: &Registry, state: &State) {
        let up = gauge(
            registry,
            "xnos_module_up",
            "1 if the module is running.",
            &["module"],
        );
        let restarts = counter(
            registry,
            "xnos_module_restarts_total",
            "Times the supervisor restarted the module.",
            &["module"],
        );
        for m in state.observed.modules.values() {
            up.with_label_values(&[&m.name])
                .set(i64::from(m.state == ModuleState::Running));
            restarts.with_label_values(&[&m.name]).inc_by(m.restarts);
        }
        let commits = counter(
            registry,
            "xnos_statedb_commits_total",
            "Transactions committed to StateDb (config and observed state).",
            &[],
        );
        commits
            .with_label_values::<&str>(&[])
            .inc_by(state.generation.saturating_sub(1));
        let info = gauge(
            registry,
            "xnos_build_info",
            "Build information; the value is always 1.",
            &["version"],
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    }
}

/// The metrics module: answers `GET /metrics` on its TCP listener.
pub async fn run(
    ctx: ModuleCtx,
    listener: Arc<TcpListener>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let response = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                                let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
                                r.headers_mut().insert(
                                    hyper::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8".parse().expect("static header"),
                                );
                                r
                            } else {
                                let mut r = Response::new(Full::new(Bytes::from("try /metrics\n")));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
            _ = ctx.fault() => {}
            _ = ctx.stopping() => return Ok(()),
        }
    }
}
