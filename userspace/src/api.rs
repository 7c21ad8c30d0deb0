//! The daemon's API: HTTP/1.1 with JSON bodies on a root-only unix socket. The views here
//! are both what the server sends and what the CLI decodes. Endpoints are listed in
//! docs/api.md.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use http_body_util::{BodyExt, Full, channel::Channel, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::{
    net::{UnixListener, UnixStream},
    sync::broadcast,
};
use xnos_common::{DropReason, PortStats};

use std::net::IpAddr;

use ipnet::IpNet;
use xnos_common::PuntReason;

use crate::{
    config::PortModeName,
    config::{Config, PortMode},
    datapath::StatsReader,
    kernel::link,
    mac::MacAddr,
    statedb::{
        Change, Commit, DatapathMode, Hardware, LearnedBy, NeighborState, Op, OperState,
        RouteAction, RouteKind, RouteProtocol, RouteTable, State, StateDb, Table, TxError,
        diff_config, table_rows, words,
    },
    supervisor::{Faults, ModuleCtx},
    trace::{TraceRequest, Tracer, unhex},
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CountersView {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub flooded: u64,
    /// Frames passed to the kernel's netdev of the port (control frames, routed-port
    /// traffic not for the router); L3 punts are counted by reason in `show routes`.
    pub to_kernel: u64,
    pub learned: u64,
    /// Drops by reason (every reason listed, zero or not).
    pub drops: BTreeMap<String, u64>,
}

impl From<PortStats> for CountersView {
    fn from(s: PortStats) -> Self {
        Self {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            flooded: s.flooded,
            to_kernel: s.to_kernel,
            learned: s.learned,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), s.drops[*r as usize]))
                .collect(),
        }
    }
}

impl CountersView {
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

words! {
    /// Where an FDB entry comes from.
    pub enum FdbKind {
        /// From config (`[[fdb]]`); learning never overwrites it.
        Static = "static",
        Learned = "learned",
    }
}

words! {
    /// What an L3 interface routes for.
    pub enum InterfaceKind {
        /// A VLAN's routed interface.
        Svi = "svi",
        /// A port that is not in any VLAN.
        Routed = "routed",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PortView {
    pub name: String,
    pub ifindex: u32,
    pub mode: PortModeName,
    /// The VLAN of untagged frames (access VLAN or trunk native VLAN).
    pub untagged_vlan: Option<u16>,
    /// VLANs carried tagged (trunk ports).
    pub tagged_vlans: Vec<u16>,
    /// How the port is forwarded.
    pub datapath: DatapathMode,
    /// Why the port uses that fast path.
    pub datapath_reason: Option<String>,
    /// The XDP features the port's driver reports (`basic,redirect,ndo-xmit,...`).
    pub xdp_features: Option<String>,
    /// Whether native-XDP ports can redirect frames to this port (the driver has
    /// `ndo-xmit`); frames they send it are dropped otherwise.
    pub xdp_redirect_target: Option<bool>,
    /// Switchdev ports: the bridge that carries the port, and whether the kernel reports
    /// the port in it.
    pub bridge: Option<String>,
    pub bridge_member: Option<bool>,
    /// The link's operational state; None when the kernel has no such link.
    pub link: Option<OperState>,
    pub error: Option<String>,
    pub counters: CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VlanView {
    pub id: u16,
    pub name: Option<String>,
    pub untagged_ports: Vec<String>,
    pub tagged_ports: Vec<String>,
    pub fdb_entries: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FdbView {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    pub kind: FdbKind,
    /// Station moves seen since it was learned.
    pub moves: u64,
    /// Who learned it; None for static entries.
    pub learned_by: Option<LearnedBy>,
    /// The kernel reports the entry as offloaded to the switch ASIC.
    pub hardware: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InterfaceView {
    pub name: String,
    pub kind: InterfaceKind,
    pub vlan: Option<u16>,
    pub port: Option<String>,
    pub addresses: Vec<IpNet>,
    pub mac: MacAddr,
    pub ifindex: u32,
    /// The link's operational state; None when the kernel has no such link.
    pub link: Option<OperState>,
    /// What the kernel module could not program.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NexthopView {
    pub gateway: Option<IpAddr>,
    pub interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouteView {
    pub prefix: IpNet,
    pub table: RouteTable,
    pub kind: RouteKind,
    pub protocol: RouteProtocol,
    pub nexthops: Vec<NexthopView>,
    /// Whether the fast path forwards (or, for local routes, recognises) it, as the
    /// datapath programmed it; the kernel handles the rest.
    pub fast_path: bool,
    /// What the fast path's maps hold for the prefix (None: nothing), as the datapath
    /// reports it.
    pub fast_path_action: Option<RouteAction>,
    /// Why the maps do not hold what the kernel's route asks for.
    pub fast_path_error: Option<String>,
    /// What a switch ASIC does with it, as the kernel reports; None when no switchdev
    /// driver took it.
    pub hardware: Option<Hardware>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct L3CountersView {
    pub routed_v4: u64,
    pub routed_v6: u64,
    /// Packets handed to the kernel, by reason.
    pub punts: BTreeMap<String, u64>,
    /// Punts dropped by the punt rate limiter.
    pub punts_rate_limited: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RoutesView {
    pub routes: Vec<RouteView>,
    pub counters: L3CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NeighborView {
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    pub interface: String,
    pub state: NeighborState,
    /// Whether the fast path has it, as the datapath programmed it.
    pub fast_path: bool,
    /// Why the datapath could not write it.
    pub fast_path_error: Option<String>,
}

/// One row of a raw table (`GET /v1/db/<table>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowView {
    pub key: String,
    pub row: Value,
}

/// One line of a watch stream (`GET /v1/watch/<table>`), newline-delimited JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchEvent {
    /// The whole table; sent first, and again after the watcher fell behind.
    Snapshot { generation: u64, rows: Vec<RowView> },
    /// One row changed in commit `generation`.
    Change {
        generation: u64,
        #[serde(flatten)]
        change: Change,
    },
}

/// Body of `POST /v1/transact`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transaction {
    pub ops: Vec<Op>,
}

/// Body of `POST /v1/config/diff` and `/v1/config/apply`: a config file's text.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigText {
    /// Name used in error messages.
    pub file: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub changes: Vec<Change>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub path: PathBuf,
    pub backup: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody {
    error: String,
}

type Body = BoxBody<Bytes, Infallible>;

pub struct Api {
    db: Arc<StateDb>,
    stats: Option<StatsReader>,
    tracer: Option<Tracer>,
    config_path: PathBuf,
    faults: Faults,
}

impl Api {
    pub fn new(
        db: Arc<StateDb>,
        stats: Option<StatsReader>,
        tracer: Option<Tracer>,
        config_path: PathBuf,
        faults: Faults,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            stats,
            tracer,
            config_path,
            faults,
        })
    }

    pub fn ports(&self) -> Vec<PortView> {
        self.db.read(|state| {
            state
                .config
                .ports
                .values()
                .map(|port| {
                    let status = state.observed.port_status.get(&port.name);
                    let bridge = state.observed.bridge_ports.get(&port.name);
                    let counters = match (status, &self.stats) {
                        // A switchdev port has no fast-path counters (the bridge or
                        // the ASIC forwards it).
                        (Some(s), Some(stats))
                            if s.ifindex != 0 && s.datapath != DatapathMode::Switchdev =>
                        {
                            stats.get(s.stats_slot).map(Into::into).unwrap_or_default()
                        }
                        _ => CountersView::from(PortStats::default()),
                    };
                    let (mode, tagged_vlans) = match &port.mode {
                        PortMode::Access { .. } => (PortModeName::Access, Vec::new()),
                        PortMode::Trunk { vlans, .. } => {
                            (PortModeName::Trunk, vlans.iter().copied().collect())
                        }
                    };
                    PortView {
                        name: port.name.clone(),
                        ifindex: status.map_or(0, |s| s.ifindex),
                        mode,
                        untagged_vlan: port.mode.untagged_vlan(),
                        tagged_vlans,
                        datapath: status.map_or(DatapathMode::None, |s| s.datapath),
                        datapath_reason: status.and_then(|s| s.datapath_reason.clone()),
                        xdp_features: status.and_then(|s| s.xdp_features.clone()),
                        xdp_redirect_target: status.and_then(|s| s.xdp_redirect_target),
                        link: state.observed.links.get(&port.name).map(|l| l.oper_state),
                        bridge: bridge.and_then(|b| b.bridge.clone()),
                        bridge_member: bridge.map(|b| b.member),
                        error: status
                            .and_then(|s| s.error.clone())
                            .or_else(|| bridge.and_then(|b| b.error.clone())),
                        counters,
                    }
                })
                .collect()
        })
    }

    pub fn vlans(&self) -> Vec<VlanView> {
        self.db.read(|state| {
            state
                .config
                .vlans
                .values()
                .map(|vlan| {
                    let mut view = VlanView {
                        id: vlan.id,
                        name: vlan.name.clone(),
                        untagged_ports: Vec::new(),
                        tagged_ports: Vec::new(),
                        fdb_entries: fdb_rows(state).filter(|f| f.vlan == vlan.id).count(),
                    };
                    for port in state.config.ports.values() {
                        if port.mode.untagged_vlan() == Some(vlan.id) {
                            view.untagged_ports.push(port.name.clone());
                        } else if port.mode.vlans().contains(&vlan.id) {
                            view.tagged_ports.push(port.name.clone());
                        }
                    }
                    view
                })
                .collect()
        })
    }

    pub fn fdb(&self) -> Vec<FdbView> {
        self.db.read(|state| {
            let mut rows: Vec<FdbView> = fdb_rows(state).collect();
            rows.sort_by_key(|r| (r.vlan, r.mac));
            rows
        })
    }

    pub fn interfaces(&self) -> Vec<InterfaceView> {
        self.db.read(|state| {
            let mac = state.config.switch.router_mac();
            state
                .config
                .interfaces
                .values()
                .map(|iface| {
                    let link = state.observed.links.get(&iface.name);
                    InterfaceView {
                        name: iface.name.clone(),
                        kind: if iface.vlan.is_some() {
                            InterfaceKind::Svi
                        } else {
                            InterfaceKind::Routed
                        },
                        vlan: iface.vlan,
                        port: iface
                            .port
                            .clone()
                            .or_else(|| iface.vlan.map(|v| crate::switchdev::svi_port(state, v))),
                        addresses: iface.addresses.clone(),
                        mac,
                        ifindex: link.map_or(0, |l| l.ifindex),
                        link: link.map(|l| l.oper_state),
                        error: state
                            .observed
                            .interface_status
                            .get(&iface.name)
                            .and_then(|s| s.error.clone()),
                    }
                })
                .collect()
        })
    }

    pub fn routes(&self) -> RoutesView {
        let counters = self
            .stats
            .as_ref()
            .and_then(|s| s.l3().ok())
            .map(|c| L3CountersView {
                routed_v4: c.routed_v4,
                routed_v6: c.routed_v6,
                punts: PuntReason::ALL
                    .iter()
                    .map(|r| (r.name().to_string(), c.punts[*r as usize]))
                    .collect(),
                punts_rate_limited: c.punts_rate_limited,
            })
            .unwrap_or_default();
        self.db.read(|state| {
            let names = ifnames(state);
            let routes = state
                .observed
                .fib
                .iter()
                .filter(|(_, r)| {
                    matches!(
                        r.kind,
                        RouteKind::Unicast
                            | RouteKind::Local
                            | RouteKind::Blackhole
                            | RouteKind::Unreachable
                            | RouteKind::Prohibit
                    )
                })
                .map(|((table, prefix), r)| {
                    (table, prefix, r, state.observed.datapath_routes.get(prefix))
                })
                .map(|(table, prefix, r, programmed)| RouteView {
                    prefix: *prefix,
                    table: *table,
                    kind: r.kind,
                    protocol: r.protocol,
                    nexthops: r
                        .nexthops
                        .iter()
                        .map(|n| NexthopView {
                            gateway: n.gateway,
                            interface: names
                                .get(&n.ifindex)
                                .cloned()
                                .unwrap_or_else(|| n.ifindex.to_string()),
                        })
                        .collect(),
                    // The maps are keyed by prefix: what they hold answers for the route
                    // of the table that decides (local before main, as the kernel does).
                    fast_path: programmed.and_then(|p| p.action).is_some_and(
                        |action| match table {
                            RouteTable::Local => {
                                action == RouteAction::Local && r.kind == RouteKind::Local
                            }
                            RouteTable::Main => action == RouteAction::Forward,
                        },
                    ),
                    fast_path_action: programmed.and_then(|p| p.action),
                    fast_path_error: programmed.and_then(|p| p.error.clone()),
                    hardware: r.hardware,
                })
                .collect();
            RoutesView { routes, counters }
        })
    }

    pub fn neighbors(&self) -> Vec<NeighborView> {
        self.db.read(|state| {
            let names = ifnames(state);
            state
                .observed
                .neighbors
                .values()
                .filter(|n| !n.ip.is_multicast())
                .map(|n| {
                    let interface = names
                        .get(&n.ifindex)
                        .cloned()
                        .unwrap_or_else(|| n.ifindex.to_string());
                    let programmed = state.observed.datapath_neighbors.get(&(n.ifindex, n.ip));
                    NeighborView {
                        ip: n.ip,
                        mac: n.mac,
                        fast_path: programmed.is_some_and(|p| p.mac.is_some()),
                        fast_path_error: programmed.and_then(|p| p.error.clone()),
                        interface,
                        state: n.state,
                    }
                })
                .collect()
        })
    }

    fn trace(&self, request: &TraceRequest) -> Response<Body> {
        let Some(tracer) = &self.tracer else {
            return not_found("tracing is not available in this daemon".into());
        };
        let frame = match unhex(&request.frame) {
            Ok(frame) => frame,
            Err(e) => return bad_request(e),
        };
        match self
            .db
            .read(|state| tracer.trace(state, &request.port, &frame))
        {
            Ok(view) => json(StatusCode::OK, &view),
            Err(e) => bad_request(e),
        }
    }

    fn table_view(&self, table: Table) -> Vec<RowView> {
        self.db
            .rows(table)
            .into_iter()
            .map(|(key, row)| RowView { key, row })
            .collect()
    }

    fn parse_config(&self, body: &[u8]) -> Result<Config, String> {
        let request: ConfigText =
            serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))?;
        Config::parse(&request.file, &request.text, |name| {
            link::ifindex(name).is_some()
        })
        .map_err(|e| e.to_string())
    }

    /// Write the running config to the config file: to a temporary file first, then the
    /// current file becomes `<file>.bak`, then the new one takes its name (atomic rename).
    fn save_config(&self) -> io::Result<Saved> {
        let text = self.db.read(|s| s.config.to_toml());
        let path = &self.config_path;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(b"# Written by `xnos config save`.\n")?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        let backup = if path.exists() {
            let backup = path.with_extension("toml.bak");
            std::fs::copy(path, &backup)?;
            Some(backup)
        } else {
            None
        };
        std::fs::rename(&tmp, path)?;
        Ok(Saved {
            path: path.clone(),
            backup,
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return Ok(bad_request(format!("reading request body: {e}"))),
        };
        let response = match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "ports"]) => json(StatusCode::OK, &self.ports()),
            (&Method::GET, ["v1", "vlans"]) => json(StatusCode::OK, &self.vlans()),
            (&Method::GET, ["v1", "fdb"]) => json(StatusCode::OK, &self.fdb()),
            (&Method::POST, ["v1", "trace"]) => match serde_json::from_slice::<TraceRequest>(&body)
            {
                Ok(request) => self.trace(&request),
                Err(e) => bad_request(format!("bad trace request: {e}")),
            },
            (&Method::GET, ["v1", "interfaces"]) => json(StatusCode::OK, &self.interfaces()),
            (&Method::GET, ["v1", "routes"]) => json(StatusCode::OK, &self.routes()),
            (&Method::GET, ["v1", "neighbors"]) => json(StatusCode::OK, &self.neighbors()),
            (&Method::GET, ["v1", "ready"]) => {
                json(StatusCode::OK, &self.db.read(crate::ready::Readiness::of))
            }
            (&Method::GET, ["v1", "modules"]) => {
                json(StatusCode::OK, &self.table_view(Table::Module))
            }
            (&Method::GET, ["v1", "db"]) => json(StatusCode::OK, &Table::ALL.map(|t| t.name())),
            (&Method::GET, ["v1", "db", table]) => match table.parse::<Table>() {
                Ok(table) => json(StatusCode::OK, &self.table_view(table)),
                Err(e) => not_found(e),
            },
            (&Method::GET, ["v1", "watch", table]) => match table.parse::<Table>() {
                Ok(table) => self.watch(table),
                Err(e) => not_found(e),
            },
            (&Method::POST, ["v1", "transact"]) => {
                match serde_json::from_slice::<Transaction>(&body) {
                    Ok(tx) => commit_response(self.db.transact(&tx.ops)),
                    Err(e) => bad_request(format!("bad transaction: {e}")),
                }
            }
            (&Method::GET, ["v1", "config"]) => {
                let text = self.db.read(|s| s.config.to_toml());
                Response::new(Full::new(Bytes::from(text)).boxed())
            }
            (&Method::POST, ["v1", "config", "diff"]) => match self.parse_config(&body) {
                Ok(config) => {
                    let changes = self.db.read(|s| diff_config(&s.config, &config));
                    json(StatusCode::OK, &ConfigDiff { changes })
                }
                Err(error) => bad_request(error),
            },
            (&Method::POST, ["v1", "config", "apply"]) => match self.parse_config(&body) {
                Ok(config) => commit_response(self.db.replace_config(config)),
                Err(error) => bad_request(error),
            },
            (&Method::POST, ["v1", "config", "save"]) => match self.save_config() {
                Ok(saved) => json(StatusCode::OK, &saved),
                Err(e) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &ErrorBody {
                        error: format!("saving to {}: {e}", self.config_path.display()),
                    },
                ),
            },
            (&Method::POST, ["v1", "debug", "fault", module])
                if cfg!(feature = "fault-injection") =>
            {
                if self.faults.inject(module) {
                    json(StatusCode::OK, &format!("fault injected into {module}"))
                } else {
                    not_found(format!("no module {module:?}"))
                }
            }
            _ => not_found(format!("no such API endpoint: {method} {path}")),
        };
        Ok(response)
    }

    /// Stream a table: a snapshot, then each change in commit order; a watcher that
    /// falls behind gets a fresh snapshot instead of a gap.
    fn watch(&self, table: Table) -> Response<Body> {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(64);
        let db = self.db.clone();
        tokio::spawn(async move {
            let line = |event: &WatchEvent| {
                let mut bytes = serde_json::to_vec(event).expect("watch events serialise");
                bytes.push(b'\n');
                Bytes::from(bytes)
            };
            let snapshot = |state: &State| WatchEvent::Snapshot {
                generation: state.generation,
                rows: table_rows(state, table)
                    .into_iter()
                    .map(|(key, row)| RowView { key, row })
                    .collect(),
            };
            let sub = db.subscribe();
            let mut commits = sub.commits;
            if tx.send_data(line(&snapshot(&sub.snapshot))).await.is_err() {
                return;
            }
            loop {
                let commit: Arc<Commit> = match commits.recv().await {
                    Ok(commit) => commit,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let sub = db.subscribe();
                        commits = sub.commits;
                        if tx.send_data(line(&snapshot(&sub.snapshot))).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for change in commit.changes.iter().filter(|c| c.table == table) {
                    let event = WatchEvent::Change {
                        generation: commit.generation,
                        change: change.clone(),
                    };
                    if tx.send_data(line(&event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut response = Response::new(body.boxed());
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/x-ndjson".parse().expect("static header"),
        );
        response
    }
}

fn ifnames(state: &State) -> BTreeMap<u32, String> {
    state
        .observed
        .links
        .values()
        .map(|l| (l.ifindex, l.name.clone()))
        .collect()
}

fn fdb_rows(state: &State) -> impl Iterator<Item = FdbView> + '_ {
    let statics = state.config.fdb.values().map(|f| FdbView {
        vlan: f.vlan,
        mac: f.mac,
        port: f.port.clone(),
        kind: FdbKind::Static,
        moves: 0,
        learned_by: None,
        hardware: false,
    });
    let learned = state.observed.fdb_learned.values().map(|f| FdbView {
        vlan: f.vlan,
        mac: f.mac,
        port: f.port.clone(),
        kind: FdbKind::Learned,
        moves: f.moves,
        learned_by: Some(LearnedBy::Xdp),
        hardware: false,
    });
    let bridge = state.observed.bridge_fdb.values().map(|f| FdbView {
        vlan: f.vlan,
        mac: f.mac,
        port: f.port.clone(),
        kind: FdbKind::Learned,
        moves: f.moves,
        learned_by: Some(LearnedBy::Bridge),
        hardware: f.offloaded,
    });
    statics.chain(learned).chain(bridge)
}

fn commit_response(result: Result<Commit, TxError>) -> Response<Body> {
    match result {
        Ok(commit) => json(StatusCode::OK, &commit),
        Err(e) => bad_request(e.to_string()),
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let body = serde_json::to_vec(body).expect("API views serialise");
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    response
}

fn bad_request(error: String) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, &ErrorBody { error })
}

fn not_found(error: String) -> Response<Body> {
    json(StatusCode::NOT_FOUND, &ErrorBody { error })
}

/// Bind the API socket (root-only), refusing to steal it from a live instance.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another xnosd is already listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The API module: serves connections until shutdown. The listener outlives restarts.
pub async fn run(ctx: ModuleCtx, listener: Arc<UnixListener>, api: Arc<Api>) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let api = api.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| api.clone().handle(req));
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %e, "API connection ended with an error");
                    }
                });
            }
            _ = ctx.fault() => {}
            _ = ctx.stopping() => return Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach xnosd at {socket}: {source} (is xnosd running? use --socket or XNOS_SOCKET to pick an instance)"
    )]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to xnosd at {socket}: {message}")]
    Protocol { socket: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

/// A client of one daemon's API.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    fn protocol(&self, message: impl ToString) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            message: message.to_string(),
        }
    }

    /// Send a request; returns the response once its status is a success.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "xnosd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Refused(message))
    }

    async fn body(&self, response: Response<Incoming>) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        let body = self.body(response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("bad JSON from daemon: {e}")))
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&self.body(response).await?).into_owned())
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.protocol(e))?;
        let response = self.send(Method::POST, path, Some(body)).await?;
        let body = self.body(response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("bad JSON from daemon: {e}")))
    }

    /// Follow a watch stream, calling `f` on each event until the daemon closes it.
    pub async fn watch(
        &self,
        table: &str,
        mut f: impl FnMut(WatchEvent),
    ) -> Result<(), ClientError> {
        let response = self
            .send(Method::GET, &format!("/v1/watch/{table}"), None)
            .await?;
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.protocol(e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event = serde_json::from_slice(&line)
                    .map_err(|e| self.protocol(format!("bad watch event: {e}")))?;
                f(event);
            }
        }
        Ok(())
    }
}
