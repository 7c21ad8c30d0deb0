//! The daemon's API: HTTP/1.1 with JSON bodies on a root-only unix socket. This file is
//! the server; `views` holds what it sends (and the CLI decodes), `client` the other end.
//! Endpoints are listed in docs/api.md.

mod client;
mod stream;
mod views;

pub use self::{client::*, views::*};

use std::{
    convert::Infallible,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
    sync::{Notify, Semaphore, broadcast, mpsc},
};

use self::stream::STREAM_CHUNK;
use crate::{
    config::Config,
    datapath::StatsReader,
    kernel::link,
    statedb::{
        ApiWriter, Change, Commit, CommitSource, FdbClear, FdbCleared, Op, RowsSnapshot, Table,
        TxError, diff_config,
    },
    supervisor::{Faults, ModuleCtx},
    trace::{TraceRequest, Tracer, unhex},
};

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

/// Body of `POST /v1/fdb/clear`: which learned MACs to forget (every one if neither is
/// given).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FdbClearRequest {
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub port: Option<String>,
}

/// Answer of `POST /v1/fdb/clear`, once the datapath has done it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FdbClearedView {
    /// How many learned entries went.
    pub removed: u64,
}

/// How long `POST /v1/fdb/clear` waits for the datapath module.
const FDB_CLEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body xnosd reads. A whole config apply with ten thousand rows is
/// about 2 MB of JSON; 16 MiB leaves room for that eight times over, and no client can make
/// xnosd hold more.
pub const MAX_REQUEST_BODY: u64 = 16 << 20;

/// How many bytes of changes a watcher may have waiting for it to read. Past that it has
/// fallen behind: it is told so and closed, and xnosd forgets it rather than hold more.
const WATCH_BACKLOG: usize = 16 << 20;

/// How long a watcher that fell behind has to read its last line before its connection
/// is closed from this side.
const WATCH_GRACE: Duration = Duration::from_secs(5);

/// The most connections served at once; each holds a file descriptor and, for a watcher,
/// its backlog. More are refused with 503 at once rather than left waiting.
pub const MAX_CONNECTIONS: usize = 512;

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
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}

type Body = BoxBody<Bytes, Infallible>;

pub struct Api {
    /// Reads StateDb, and writes the API's one table (`fdb-clear`).
    db: ApiWriter,
    /// One `fdb-clear` request at a time: each waits for the answer to its own.
    clearing: tokio::sync::Mutex<()>,
    stats: Option<StatsReader>,
    tracer: Option<Tracer>,
    config_path: PathBuf,
    faults: Faults,
}

impl Api {
    pub fn new(
        db: ApiWriter,
        stats: Option<StatsReader>,
        tracer: Option<Tracer>,
        config_path: PathBuf,
        faults: Faults,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            clearing: Default::default(),
            stats,
            tracer,
            config_path,
            faults,
        })
    }

    pub fn ports(&self) -> Vec<PortView> {
        self.db
            .read(|state| views::ports(state, self.stats.as_ref()))
    }

    pub fn vlans(&self) -> Vec<VlanView> {
        self.db.read(views::vlans)
    }

    pub fn interfaces(&self) -> Vec<InterfaceView> {
        self.db.read(views::interfaces)
    }

    /// The routes view at once (the API streams it: `stream::routes`).
    pub fn routes(&self) -> RoutesView {
        let counters = views::l3_counters(self.stats.as_ref());
        self.db.read(|state| views::routes(state, counters))
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

    /// Ask the datapath module, through `fdb-clear`, to forget the learned MACs `request`
    /// names, and wait for its answer in `fdb-cleared`.
    async fn clear_fdb(&self, request: FdbClearRequest) -> Result<FdbClearedView, String> {
        if let Some(vlan) = request.vlan
            && let Some(message) = crate::config::vlan_range_error(i64::from(vlan))
        {
            return Err(format!("vlan: {message}"));
        }
        if let Some(port) = &request.port
            && !self.db.read(|s| s.config.ports.contains_key(port))
        {
            return Err(format!("port: {port:?} is not a switch port"));
        }
        let _one_at_a_time = self.clearing.lock().await;
        // Subscribed before the request is written, so that the answer cannot slip by.
        let mut commits = self.db.commits();
        let (asked, _) = self.db.write(|tx| {
            let asked = tx.observed().fdb_clear.request + 1;
            tx.fdb_clear(FdbClear {
                request: asked,
                vlan: request.vlan,
                port: request.port,
            });
            asked
        });
        let deadline = tokio::time::sleep(FDB_CLEAR_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let answer: Option<FdbCleared> = self.db.read(|s| {
                (s.observed.fdb_cleared.request >= asked).then(|| s.observed.fdb_cleared.clone())
            });
            match answer {
                Some(FdbCleared { error: Some(e), .. }) => return Err(e),
                Some(FdbCleared { removed, .. }) => return Ok(FdbClearedView { removed }),
                None => {}
            }
            tokio::select! {
                commit = commits.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = commit {
                        return Err("xnosd is stopping".into());
                    }
                }
                _ = &mut deadline => {
                    return Err(format!(
                        "the datapath module did not answer request {asked} within {} s \
                         (see `xnos show modules`)",
                        FDB_CLEAR_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    }

    fn table_view(&self, table: Table) -> Vec<RowView> {
        self.db
            .rows(table)
            .into_iter()
            .map(|(key, row)| RowView { key, row })
            .collect()
    }

    /// Stream `chunks`: each is made under its own read lock, once the client took the
    /// ones before (see `stream`).
    fn stream(&self, chunks: stream::Chunks) -> Response<Body> {
        stream::respond(self.db.db().clone(), chunks)
    }

    fn parse_config(&self, body: &[u8]) -> Result<Config, String> {
        let request: ConfigText =
            serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))?;
        Config::parse(&request.file, &request.text, link::KernelLinks).map_err(|e| e.to_string())
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

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        close: Arc<Notify>,
    ) -> Result<Response<Body>, Infallible> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let source = commit_source(req.headers());
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_REQUEST_BODY) {
            return Ok(too_large());
        }
        // A chunked body declares no length: it is cut off where it passes the limit.
        let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY as usize)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Ok(too_large()),
            Err(e) => return Ok(bad_request(format!("reading request body: {e}"))),
        };
        let response = match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "ports"]) => json(StatusCode::OK, &self.ports()),
            (&Method::GET, ["v1", "vlans"]) => json(StatusCode::OK, &self.vlans()),
            (&Method::GET, ["v1", "fdb"]) => self.stream(stream::fdb(STREAM_CHUNK)),
            (&Method::POST, ["v1", "fdb", "clear"]) => {
                match serde_json::from_slice::<FdbClearRequest>(&body) {
                    Ok(request) => match self.clear_fdb(request).await {
                        Ok(cleared) => json(StatusCode::OK, &cleared),
                        Err(e) => bad_request(e),
                    },
                    Err(e) => bad_request(format!("bad fdb clear request: {e}")),
                }
            }
            (&Method::POST, ["v1", "trace"]) => match serde_json::from_slice::<TraceRequest>(&body)
            {
                Ok(request) => self.trace(&request),
                Err(e) => bad_request(format!("bad trace request: {e}")),
            },
            (&Method::GET, ["v1", "interfaces"]) => json(StatusCode::OK, &self.interfaces()),
            (&Method::GET, ["v1", "routes"]) => {
                let counters = views::l3_counters(self.stats.as_ref());
                self.stream(stream::routes(&counters, STREAM_CHUNK))
            }
            (&Method::GET, ["v1", "neighbors"]) => self.stream(stream::neighbors(STREAM_CHUNK)),
            (&Method::GET, ["v1", "ready"]) => {
                json(StatusCode::OK, &self.db.read(crate::ready::Readiness::of))
            }
            (&Method::GET, ["v1", "modules"]) => {
                json(StatusCode::OK, &self.table_view(Table::Module))
            }
            (&Method::GET, ["v1", "db"]) => json(StatusCode::OK, &Table::ALL.map(|t| t.name())),
            (&Method::GET, ["v1", "db", table]) => match table.parse::<Table>() {
                Ok(table) => self.stream(stream::table(table, STREAM_CHUNK)),
                Err(e) => not_found(e),
            },
            (&Method::GET, ["v1", "watch", table]) => match table.parse::<Table>() {
                Ok(table) => self.watch(table, close),
                Err(e) => not_found(e),
            },
            (&Method::POST, ["v1", "transact"]) => {
                match serde_json::from_slice::<Transaction>(&body) {
                    Ok(tx) => commit_response(source, self.db.transact(&tx.ops)),
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
                Ok(config) => commit_response(source, self.db.replace_config(config)),
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

    /// Stream a table: a snapshot, then each change in commit order. Each watcher has its
    /// own queue, bounded by `WATCH_BACKLOG`; one that lets it fill gets a last `fell-behind`
    /// line and is closed (after `WATCH_GRACE`, whether it read that line or not), so that a
    /// stuck watcher never holds commits back nor makes xnosd hold ever more for it.
    fn watch(&self, table: Table, close: Arc<Notify>) -> Response<Body> {
        let (queue, body) = WatchQueue::new();
        let db = self.db.clone();
        tokio::spawn(async move {
            let line = |event: &WatchEvent| {
                let mut bytes = serde_json::to_vec(event).expect("watch events serialise");
                bytes.push(b'\n');
                Bytes::from(bytes)
            };
            let (mut generation, rows, mut commits) = db.subscribe_table(table);
            if !queue.stream_snapshot(generation, rows).await {
                return;
            }
            // Why it fell behind, once it has.
            let behind = 'follow: loop {
                let commit: Arc<Commit> = tokio::select! {
                    commit = commits.recv() => match commit {
                        Ok(commit) => commit,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            break 'follow format!("{n} commits passed before it read them")
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = queue.tx.closed() => return,
                };
                generation = commit.generation;
                for change in commit.changes.iter().filter(|c| c.table == table) {
                    let event = WatchEvent::Change {
                        generation,
                        change: change.clone(),
                    };
                    if !queue.push(line(&event)) {
                        break 'follow format!(
                            "more than {} MiB of changes waited for it to read them",
                            WATCH_BACKLOG >> 20
                        );
                    }
                }
            };
            // A receiver that is not read holds every commit after it until the channel's
            // backlog is full: let go of it before the grace time.
            drop(commits);
            tracing::info!(%table, generation, "a watcher fell behind; closing it");
            queue.push_snapshot(line(&WatchEvent::FellBehind {
                generation,
                error: format!(
                    "this watcher fell behind: {behind}; watch again to start from a fresh \
                     snapshot"
                ),
            }));
            drop(queue);
            tokio::time::sleep(WATCH_GRACE).await;
            close.notify_one();
        });
        let mut response = Response::new(body);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/x-ndjson".parse().expect("static header"),
        );
        // A watch ends its connection: the close after a fall-behind then never cuts off a
        // later request on the same connection.
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            "close".parse().expect("static header"),
        );
        response
    }
}

/// The lines waiting for one watcher, with the bytes of changes among them counted: the
/// queue itself does not bound them, so that the last line can always be queued.
struct WatchQueue {
    tx: mpsc::UnboundedSender<(Bytes, usize)>,
    backlog: Arc<AtomicUsize>,
    /// Told each time the watcher took a line.
    taken: Arc<Notify>,
}

impl WatchQueue {
    fn new() -> (Self, Body) {
        let (tx, rx) = mpsc::unbounded_channel::<(Bytes, usize)>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(Notify::new());
        let lines = futures::stream::unfold(
            (rx, backlog.clone(), taken.clone()),
            |(mut rx, backlog, taken)| async move {
                let (line, counted) = rx.recv().await?;
                backlog.fetch_sub(counted, Ordering::Relaxed);
                taken.notify_one();
                Some((Ok::<_, Infallible>(Frame::data(line)), (rx, backlog, taken)))
            },
        );
        (Self { tx, backlog, taken }, StreamBody::new(lines).boxed())
    }

    /// Queue the snapshot line, `STREAM_CHUNK` bytes at a time, each once the watcher has
    /// taken all but one chunk of what was queued before: xnosd holds the table's typed
    /// rows and a chunk or two of its JSON, never the whole line. False when the watcher
    /// went away.
    async fn stream_snapshot(&self, generation: u64, rows: RowsSnapshot) -> bool {
        let mut chunk = Vec::with_capacity(STREAM_CHUNK + 4096);
        // The line `WatchEvent::Snapshot` serialises to, written a row at a time.
        write!(
            chunk,
            "{{\"type\":\"snapshot\",\"generation\":{generation},\"rows\":["
        )
        .expect("writing to a vector");
        for (i, (key, row)) in rows.enumerate() {
            if i > 0 {
                chunk.push(b',');
            }
            serde_json::to_writer(&mut chunk, &RowView { key, row }).expect("rows serialise");
            if chunk.len() >= STREAM_CHUNK {
                while self.backlog.load(Ordering::Relaxed) >= STREAM_CHUNK {
                    tokio::select! {
                        () = self.taken.notified() => {}
                        () = self.tx.closed() => return false,
                    }
                }
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK + 4096));
                self.backlog.fetch_add(full.len(), Ordering::Relaxed);
                let len = full.len();
                let _ = self.tx.send((full.into(), len));
            }
        }
        chunk.extend_from_slice(b"]}\n");
        self.push_snapshot(chunk.into());
        true
    }

    /// Queue a change; false, and nothing queued, when the backlog would pass its bound.
    fn push(&self, line: Bytes) -> bool {
        let len = line.len();
        if self.backlog.fetch_add(len, Ordering::Relaxed) + len > WATCH_BACKLOG {
            return false;
        }
        // A watcher that went away is noticed by the loop, through `closed`.
        let _ = self.tx.send((line, len));
        true
    }

    /// Queue a line outside the bound: a snapshot (as large as the table, whatever the
    /// bound) or the last line.
    fn push_snapshot(&self, line: Bytes) {
        let _ = self.tx.send((line, 0));
    }
}

fn json_response(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    response
}

/// What the CLI's client sends as its User-Agent: its commits are logged as the CLI's.
pub const CLI_USER_AGENT: &str = concat!("xnos-cli/", env!("CARGO_PKG_VERSION"));

fn commit_source(headers: &hyper::HeaderMap) -> CommitSource {
    let cli = headers
        .get(hyper::header::USER_AGENT)
        .is_some_and(|agent| agent == CLI_USER_AGENT);
    if cli {
        CommitSource::Cli
    } else {
        CommitSource::Api
    }
}

fn commit_response(source: CommitSource, result: Result<Arc<Commit>, TxError>) -> Response<Body> {
    match result {
        Ok(commit) => {
            tracing::info!("{}", commit.summary(source));
            json(StatusCode::OK, &*commit)
        }
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

fn too_large() -> Response<Body> {
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        &ErrorBody {
            error: format!(
                "request body too large: the limit is {} MiB ({MAX_REQUEST_BODY} bytes)",
                MAX_REQUEST_BODY >> 20
            ),
        },
    )
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
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = accept(&listener, &connections) => {
                let Some((stream, permit)) = accepted else { continue };
                let api = api.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let close = Arc::new(Notify::new());
                    let service = {
                        let close = close.clone();
                        service_fn(move |req| api.clone().handle(req, close.clone()))
                    };
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        served = connection => if let Err(e) = served {
                            tracing::debug!(error = %e, "API connection ended with an error");
                        },
                        () = close.notified() => {}
                    }
                });
            }
            _ = ctx.fault() => {}
            _ = ctx.stopping() => return Ok(()),
        }
    }
}

/// The next connection with a permit to serve it; None when there was none to take (an
/// accept error, or one past the limit, which is told so and closed).
async fn accept(
    listener: &UnixListener,
    connections: &Arc<Semaphore>,
) -> Option<(UnixStream, tokio::sync::OwnedSemaphorePermit)> {
    let mut stream = match listener.accept().await {
        Ok((stream, _)) => stream,
        Err(e) => {
            // Out of file descriptors, most likely: the connections already open are still
            // served, and a later accept may succeed.
            tracing::warn!(error = %e, "accepting an API connection");
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    let Ok(permit) = connections.clone().try_acquire_owned() else {
        tokio::spawn(async move {
            let _ = stream.write_all(&busy()).await;
            let _ = stream.shutdown().await;
        });
        return None;
    };
    Some((stream, permit))
}

/// Serves the socket while xnosd loads its datapath, before StateDb and the API module
/// exist (verifying the programs and taking over an earlier instance's maps take a while):
/// `GET /v1/ready` says what xnosd is doing, anything else is told to come back. A
/// client is answered at once instead of waiting in the listen queue. Stops when the
/// returned guard is dropped; connections it has accepted close after their answer.
pub fn serve_while_loading(listener: Arc<UnixListener>) -> LoadingServer {
    let task = tokio::spawn(async move {
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Some((stream, permit)) = accept(&listener, &connections).await else {
                continue;
            };
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(|req: Request<Incoming>| async move {
                    let mut response = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/v1/ready") => {
                            json(StatusCode::OK, &crate::ready::Readiness::loading())
                        }
                        _ => json(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &ErrorBody {
                                error: "xnosd is starting: it is loading its datapath; try \
                                        again once `xnos wait-ready` returns"
                                    .into(),
                            },
                        ),
                    };
                    // The API module serves the next request, on a new connection.
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                    Ok::<_, Infallible>(response)
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
            });
        }
    });
    LoadingServer(task.abort_handle())
}

/// Stops [`serve_while_loading`] when dropped.
pub struct LoadingServer(tokio::task::AbortHandle);

impl Drop for LoadingServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The whole answer to a connection past `MAX_CONNECTIONS`, written before reading its
/// request.
fn busy() -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error: format!(
            "xnosd is serving its limit of {MAX_CONNECTIONS} API connections; try again later"
        ),
    })
    .expect("errors serialise");
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}
