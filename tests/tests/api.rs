//! End-to-end tests of the API's bounds: request bodies over the limit refused before they
//! are read, large tables streamed at little cost, a stuck watcher closed without holding
//! commits back, and many clients served at once, a connection past the cap refused.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use xnos_tests::{Config, Daemon, Topology, require_root, status_kib};

/// One access port, swp1 in VLAN 10.
fn one_port() -> Config {
    Config::new().vlan(10).access("swp1", 10)
}

/// Read until the peer closes or `wait` passes; what came, and whether it closed.
fn read_until_closed(stream: &mut UnixStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// Status code and body of a raw HTTP answer.
fn status_and_body(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: xnosd\r\n\r\n").unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(30));
    assert!(closed, "GET {path}: no complete answer within 30 s");
    status_and_body(&answer)
}

// What this shows: a body declared larger than the limit is refused at once with 413 naming
// the limit, before any of it is sent; a chunked body is cut off where it passes the limit.
#[test]
fn a_request_body_over_the_limit_is_refused_before_it_is_read() {
    require_root!();
    let topo = Topology::new(&["swp1"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &one_port()).unwrap();

    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    write!(
        stream,
        "POST /v1/transact HTTP/1.1\r\nHost: xnosd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        17u64 << 20
    )
    .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5));
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert!(body.contains("16 MiB"), "{body}");

    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    write!(
        stream,
        "POST /v1/transact HTTP/1.1\r\nHost: xnosd\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..20 {
        // xnosd may stop reading, and close, as soon as the limit is passed.
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5));
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert!(body.contains("16 MiB"), "{body}");

    // The limit is on size only: a body under it is read as before.
    let (status, body) = daemon
        .api_post("/v1/transact", &serde_json::json!({"ops": []}))
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

// What this shows: listing a 50k-route fib (`GET /v1/db/fib`, what `xnos db get fib`
// reads) streams it: each of eight clients at once gets every route, and the answer comes
// in chunks of about 64 KiB as it is written (what eight listings cost xnosd's RSS is
// printed, for the record; the bench, not a test, judges memory). The routes view
// (`GET /v1/routes`, `xnos show routes`) and a watch's snapshot of the fib stream too.
#[test]
fn a_large_table_is_streamed_at_little_cost() {
    require_root!();
    const ROUTES: usize = 50_000;
    let topo = Topology::new(&["swp1"]).unwrap();
    topo.switch.veth("rt0", "rt1").unwrap();
    topo.switch.ip(&["link", "set", "rt0", "up"]).unwrap();
    topo.switch.ip(&["link", "set", "rt1", "up"]).unwrap();
    let batch = std::env::temp_dir().join(format!("{}-routes.batch", topo.switch.name()));
    let lines: String = (0..ROUTES)
        .map(|i| {
            let (a, b, c) = (64 + i / 65536, (i / 256) % 256, i % 256);
            format!("route add 10.{a}.{b}.{c}/32 dev rt0\n")
        })
        .collect();
    std::fs::write(&batch, lines).unwrap();
    let loaded = topo.switch.ip(&["-batch", batch.to_str().unwrap()]);
    std::fs::remove_file(&batch).unwrap();
    loaded.unwrap();

    // Started after the routes are in the kernel, xnosd reads them in its first sync: the
    // fib is whole once it is ready, and has never been listed.
    let daemon = Daemon::start(&topo.switch, &one_port()).unwrap();
    let pid = daemon.pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = get(&daemon.socket, "/v1/ready");
        if status == 200 && body.contains(r#""ready":true"#) {
            break;
        }
        assert!(Instant::now() < deadline, "xnosd never ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));

    // Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = status_kib(pid, "VmRSS");
    // Eight clients at once: what each costs xnosd adds up.
    let listed: Vec<usize> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    daemon
                        .json_raw(&["db", "get", "fib", "--json"])
                        .unwrap()
                        .as_array()
                        .unwrap()
                        .len()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let listed = *listed.iter().min().unwrap();
    let peak = status_kib(pid, "VmHWM");
    let growth_mb = (peak.saturating_sub(before)) / 1024;
    eprintln!("{listed} fib rows; RSS {before} kB before, peak {peak} kB: +{growth_mb} MB");
    assert!(listed >= ROUTES, "{listed}");

    // How much memory a listing costs is the bench's to say (it depends on how the eight
    // answers overlap); what makes it small is that the answer is written in chunks as it
    // is serialised, never built whole: an HTTP/1.1 answer in many chunks of about
    // 64 KiB (the whole fib is megabytes), not one body with a Content-Length. So is the
    // routes view (`xnos show routes`), and a watch's snapshot.
    for path in ["/v1/db/fib", "/v1/routes"] {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: xnosd\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(60));
        assert!(closed, "{path}: no complete answer within 60 s");
        let (sizes, body) = chunks(&answer, path);
        assert_streamed(path, &sizes);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rows = body
            .get("routes")
            .unwrap_or(&body)
            .as_array()
            .unwrap()
            .len();
        assert!(rows >= ROUTES, "{path}: {rows} rows");
    }
    let mut watch = UnixStream::connect(&daemon.socket).unwrap();
    write!(watch, "GET /v1/watch/fib HTTP/1.1\r\nHost: xnosd\r\n\r\n").unwrap();
    // The snapshot is the first line (it ends in `]}` and a newline, which no row has);
    // the watch goes on after it.
    watch
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (mut answer, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    loop {
        let n = watch.read(&mut buf).expect("the snapshot within 60 s");
        assert!(n > 0, "the watch ended before its snapshot");
        let from = answer.len().saturating_sub(2);
        answer.extend_from_slice(&buf[..n]);
        if answer[from..].windows(3).any(|w| w == b"]}\n") {
            break;
        }
    }
    let (sizes, body) = chunks(&answer, "/v1/watch/fib");
    assert_streamed("/v1/watch/fib", &sizes);
    let line = body.split(|b| *b == b'\n').next().unwrap();
    let snapshot: serde_json::Value = serde_json::from_slice(line).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot["rows"].as_array().unwrap().len() >= ROUTES);
}

/// The sizes of the chunks of a chunked HTTP/1.1 answer (as far as it goes), and its body.
fn chunks(answer: &[u8], path: &str) -> (Vec<usize>, Vec<u8>) {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    assert!(
        head.contains("transfer-encoding: chunked") && !head.contains("content-length"),
        "{path}: not streamed: {head}"
    );
    let mut rest = &answer[split + 4..];
    let (mut sizes, mut body) = (Vec::new(), Vec::new());
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
            .expect("a hex chunk size");
        if size == 0 || rest.len() < end + 2 + size {
            break;
        }
        sizes.push(size);
        body.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[(end + 2 + size + 2).min(rest.len())..];
    }
    (sizes, body)
}

fn assert_streamed(path: &str, sizes: &[usize]) {
    let total: usize = sizes.iter().sum();
    assert!(
        sizes.len() > 10 && sizes.iter().all(|&s| s <= 68 << 10),
        "{path}: {} chunks, largest {} bytes, {total} bytes in all",
        sizes.len(),
        sizes.iter().max().unwrap_or(&0)
    );
}

// What this shows: a watcher that sends its request and never reads does not hold commits
// back nor make xnosd hold ever more for it: commits go on, xnosd's RSS stays within a
// bound, and the watcher is closed once its backlog is full.
#[test]
fn a_stuck_watcher_is_closed_and_commits_go_on() {
    require_root!();
    let topo = Topology::new(&["swp1"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &one_port()).unwrap();
    let pid = daemon.pid().unwrap();
    let before = status_kib(pid, "VmRSS");

    let mut watcher = UnixStream::connect(&daemon.socket).unwrap();
    write!(
        watcher,
        "GET /v1/watch/vlan HTTP/1.1\r\nHost: xnosd\r\n\r\n"
    )
    .unwrap();

    // Each pair of commits adds then removes 2000 VLANs: about 700 kB of change lines for
    // the watcher. By round 40 its 16 MiB backlog is full; from then on xnosd must not
    // grow with the commits, whose lines (80 MB more) the watcher never reads.
    let ids = 100..2100;
    let insert: Vec<_> = ids
        .clone()
        .map(|id| {
            let name = format!("a-vlan-with-a-long-name-{id}");
            serde_json::json!({"op": "insert", "table": "vlan", "row": {"id": id, "name": name}})
        })
        .collect();
    let delete: Vec<_> = ids
        .map(|id| serde_json::json!({"op": "delete", "table": "vlan", "key": id.to_string()}))
        .collect();
    let mut full = 0;
    for round in 0..160 {
        if round == 40 {
            full = status_kib(pid, "VmRSS");
        }
        for ops in [&insert, &delete] {
            let (status, body) = daemon
                .api_post("/v1/transact", &serde_json::json!({ "ops": ops }))
                .unwrap();
            assert_eq!(
                status,
                200,
                "round {round}: {}",
                &body[..body.len().min(500)]
            );
        }
    }
    let after = status_kib(pid, "VmRSS");
    eprintln!("xnosd RSS {before} kB at start, {full} kB after 80 commits, {after} kB after 320");
    assert!(
        after < full + 64 * 1024,
        "xnosd grew from {full} kB to {after} kB while the watcher did not read"
    );

    let (got, closed) = read_until_closed(&mut watcher, Duration::from_secs(30));
    assert!(
        closed,
        "the stuck watcher was not closed ({} bytes read)",
        got.len()
    );
    assert!(
        daemon.log().contains("a watcher fell behind"),
        "{}",
        daemon.log()
    );
}

// What this shows: 200 clients at once are all answered; past the connection cap, a client
// is answered 503 with the reason at once rather than left waiting.
#[test]
fn many_clients_are_served_and_past_the_cap_refused() {
    require_root!();
    let topo = Topology::new(&["swp1"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &one_port()).unwrap();

    let clients: Vec<_> = (0..200)
        .map(|_| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || get(&socket, "/v1/ports"))
        })
        .collect();
    for client in clients {
        let (status, body) = client.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("swp1"), "{body}");
    }

    // Idle connections count against the cap as any other.
    let idle: Vec<_> = (0..xnos::api::MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    let mut past = UnixStream::connect(&daemon.socket).unwrap();
    let _ = write!(past, "GET /v1/ports HTTP/1.1\r\nHost: xnosd\r\n\r\n");
    let (answer, closed) = read_until_closed(&mut past, Duration::from_secs(10));
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
    assert!(body.contains("limit of 512"), "{body}");
    assert!(closed);
    drop(idle);

    // Once they are gone, clients are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&daemon.socket, "/v1/ports");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
