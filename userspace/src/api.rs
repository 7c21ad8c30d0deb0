//! The daemon's API: HTTP/1.1 with JSON bodies on a root-only unix socket. The views here
//! are both what the server sends and what the CLI decodes.
//!
//! - `GET /v1/ports`: ports with config, XDP attachment, link state and counters
//! - `GET /v1/vlans`: VLANs with their member ports and FDB entry counts
//! - `GET /v1/fdb`:   static and learned FDB entries

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::watch,
};
use xnos_common::{DropReason, PortStats};

use crate::{
    config::PortMode,
    datapath::StatsReader,
    link,
    mac::MacAddr,
    statedb::{State, StateDb},
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub flooded: u64,
    pub punted: u64,
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
            punted: s.punted,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub ifindex: u32,
    pub mode: String,
    /// The VLAN of untagged frames (access VLAN or trunk native VLAN).
    pub untagged_vlan: Option<u16>,
    /// VLANs carried tagged (trunk ports).
    pub tagged_vlans: Vec<u16>,
    /// `native`, `generic` or `none`.
    pub xdp: String,
    pub link: String,
    pub error: Option<String>,
    pub counters: CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanView {
    pub id: u16,
    pub name: Option<String>,
    pub untagged_ports: Vec<String>,
    pub tagged_ports: Vec<String>,
    pub fdb_entries: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbView {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    /// `static` (from config) or `learned` (by the datapath).
    pub kind: String,
    /// Station moves seen since it was learned.
    pub moves: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody {
    error: String,
}

pub struct Api {
    db: Arc<StateDb>,
    stats: Option<StatsReader>,
}

impl Api {
    pub fn new(db: Arc<StateDb>, stats: Option<StatsReader>) -> Arc<Self> {
        Arc::new(Self { db, stats })
    }

    pub fn ports(&self) -> Vec<PortView> {
        self.db.read(|state| {
            state
                .config
                .ports
                .values()
                .map(|port| {
                    let status = state.observed.ports.get(&port.name);
                    let counters = match (status, &self.stats) {
                        (Some(s), Some(stats)) if s.ifindex != 0 => {
                            stats.get(s.stats_slot).map(Into::into).unwrap_or_default()
                        }
                        _ => CountersView::from(PortStats::default()),
                    };
                    let (mode, tagged_vlans) = match &port.mode {
                        PortMode::Access { .. } => ("access", Vec::new()),
                        PortMode::Trunk { vlans, .. } => ("trunk", vlans.iter().copied().collect()),
                    };
                    PortView {
                        name: port.name.clone(),
                        ifindex: status.map_or(0, |s| s.ifindex),
                        mode: mode.into(),
                        untagged_vlan: port.mode.untagged_vlan(),
                        tagged_vlans,
                        xdp: status.map_or("none".into(), |s| s.xdp_mode.clone()),
                        link: link::oper_state(&port.name),
                        error: status.and_then(|s| s.error.clone()),
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

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let response = match (req.method(), req.uri().path()) {
            (&Method::GET, "/v1/ports") => json(StatusCode::OK, &self.ports()),
            (&Method::GET, "/v1/vlans") => json(StatusCode::OK, &self.vlans()),
            (&Method::GET, "/v1/fdb") => json(StatusCode::OK, &self.fdb()),
            (_, path) => json(
                StatusCode::NOT_FOUND,
                &ErrorBody {
                    error: format!("no such API endpoint: {} {path}", req.method()),
                },
            ),
        };
        Ok(response)
    }
}

fn fdb_rows(state: &State) -> impl Iterator<Item = FdbView> + '_ {
    let statics = state.config.fdb.values().map(|f| FdbView {
        vlan: f.vlan,
        mac: f.mac,
        port: f.port.clone(),
        kind: "static".into(),
        moves: 0,
    });
    let learned = state.observed.fdb.values().map(|f| FdbView {
        vlan: f.vlan,
        mac: f.mac,
        port: f.port.clone(),
        kind: "learned".into(),
        moves: f.moves,
    });
    statics.chain(learned)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_vec(body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    response
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

/// Serve the API until `shutdown` fires.
pub async fn serve(listener: UnixListener, api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "API accept failed");
                        continue;
                    }
                };
                let api = api.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| api.clone().handle(req));
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %e, "API connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
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
    #[error("xnosd refused the request: {0}")]
    Refused(String),
}

/// `GET path` on the daemon at `socket`, decoding the JSON answer.
pub async fn get<T: DeserializeOwned>(socket: &Path, path: &str) -> Result<T, ClientError> {
    let protocol = |message: String| ClientError::Protocol {
        socket: socket.into(),
        message,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            socket: socket.into(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(hyper::header::HOST, "xnosd")
        .body(Empty::<Bytes>::new())
        .map_err(|e| protocol(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| protocol(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| protocol(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(ClientError::Refused(message));
    }
    serde_json::from_slice(&body).map_err(|e| protocol(format!("bad JSON from daemon: {e}")))
}
