//! Steady numbered UDP traffic between test hosts, counted frame by frame per flow at the
//! receivers: what the restart tests and the chaos harness (`cargo xtask chaos`) measure
//! loss with.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::Host;

const RECEIVER_PORT: u16 = 9000;
const MAGIC: u32 = 0x786e_6f73;
/// Sequence numbers a receiver remembers, to tell a duplicate from a late frame.
const SEEN: u64 = 4096;
/// The most frames a sender sends at once after falling behind its schedule: a longer
/// burst would overflow the veth ring in front of the switch's XDP program, and the loss
/// would be the generator's, not the switch's.
const MAX_BURST: u64 = 32;

/// One UDP flow from host `src` to host `dst` (indexes into the hosts traffic runs
/// between).
#[derive(Clone, Copy)]
pub struct Flow {
    pub src: usize,
    pub dst: usize,
}

/// What the receiver of one flow saw.
#[derive(Default)]
pub struct Received {
    /// The sequence number expected next.
    pub next: u64,
    pub received: u64,
    /// Sequence numbers skipped and not (yet) seen late.
    pub lost: u64,
    pub duplicates: u64,
    /// Frames that came after a later one (each was counted lost until it came).
    pub late: u64,
    /// Bit per sequence number in [next - SEEN, next): seen.
    pub seen: Vec<u64>,
    /// Set by a flap: the first frame received at or after this instant is noted.
    pub resume_after: Option<Instant>,
    pub resumed: Option<Instant>,
    /// When the last frame came.
    pub last: Option<Instant>,
}

impl Received {
    fn bit(&mut self, seq: u64) -> (usize, u64) {
        if self.seen.is_empty() {
            self.seen = vec![0; (SEEN / 64) as usize];
        }
        (((seq % SEEN) / 64) as usize, 1 << (seq % 64))
    }

    fn record(&mut self, seq: u64, now: Instant) {
        self.received += 1;
        self.last = Some(now);
        if let Some(after) = self.resume_after
            && self.resumed.is_none()
            && now >= after
        {
            self.resumed = Some(now);
        }
        if seq >= self.next {
            // The skipped numbers are unseen: clear their bits (at most a whole turn).
            for missing in self.next..seq.min(self.next + SEEN) {
                let (word, mask) = self.bit(missing);
                self.seen[word] &= !mask;
            }
            self.lost += seq - self.next;
            self.next = seq + 1;
            let (word, mask) = self.bit(seq);
            self.seen[word] |= mask;
        } else if seq + SEEN < self.next {
            // Too old to tell: it was counted lost, and came after all.
            self.late += 1;
            self.lost -= 1;
        } else {
            let (word, mask) = self.bit(seq);
            if self.seen[word] & mask != 0 {
                self.duplicates += 1;
            } else {
                self.seen[word] |= mask;
                self.late += 1;
                self.lost -= 1;
            }
        }
    }
}

/// Counters the senders and receivers share with the event loop.
pub struct Counters {
    pub flows: Vec<Flow>,
    pub sent: Vec<AtomicU64>,
    pub received: Vec<Mutex<Received>>,
    pub send_errors: AtomicU64,
    /// Frames the senders left out after falling behind their schedule (never sent, so
    /// never lost).
    pub skipped: AtomicU64,
    /// Stops the senders; `stop` stops everyone.
    pub stop_sending: AtomicBool,
    stop: AtomicBool,
}

/// What one flow, or every flow, sent and received up to one moment.
#[derive(Clone, Copy, Default, Debug)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Frames sent after the last one received, per flow: lost at the end, no gap shows.
    pub unseen_tail: u64,
}

impl Counters {
    /// What flow `flow` has sent and its receiver seen so far.
    pub fn flow(&self, flow: usize) -> Totals {
        let sent = self.sent[flow].load(Ordering::Relaxed);
        let r = self.received[flow].lock().unwrap();
        Totals {
            sent,
            received: r.received,
            lost: r.lost,
            duplicates: r.duplicates,
            late: r.late,
            unseen_tail: sent.saturating_sub(r.next),
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for flow in 0..self.flows.len() {
            let f = self.flow(flow);
            t.sent += f.sent;
            t.received += f.received;
            t.lost += f.lost;
            t.duplicates += f.duplicates;
            t.late += f.late;
            t.unseen_tail += f.unseen_tail;
        }
        t
    }

    /// The flows from or to host `host`.
    pub fn through(&self, host: usize) -> impl Iterator<Item = usize> + '_ {
        self.flows
            .iter()
            .enumerate()
            .filter(move |(_, f)| f.src == host || f.dst == host)
            .map(|(i, _)| i)
    }
}

/// The sender and receiver threads; stopped and joined on drop (before the namespaces
/// their sockets live in go away).
pub struct Traffic {
    pub counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn frame(flow: u32, seq: u64) -> [u8; 64] {
    let mut payload = [0u8; 64];
    payload[..4].copy_from_slice(&MAGIC.to_be_bytes());
    payload[4..8].copy_from_slice(&flow.to_be_bytes());
    payload[8..16].copy_from_slice(&seq.to_be_bytes());
    payload
}

fn parse(payload: &[u8]) -> Option<(usize, u64)> {
    if payload.len() < 16 || payload[..4] != MAGIC.to_be_bytes() {
        return None;
    }
    let flow = u32::from_be_bytes(payload[4..8].try_into().ok()?) as usize;
    let seq = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    Some((flow, seq))
}

impl Traffic {
    /// Start a receiver on every host of `hosts` (each with its address) and a sender per
    /// host for its `flows`, `rate` frames per second in all.
    pub fn start(hosts: &[(&Host, Ipv4Addr)], flows: Vec<Flow>, rate: u32) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters {
            sent: flows.iter().map(|_| AtomicU64::new(0)).collect(),
            received: flows.iter().map(|_| Mutex::default()).collect(),
            flows,
            send_errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            stop_sending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut traffic = Self {
            counters: counters.clone(),
            threads: Vec::new(),
        };
        for (index, (host, _)) in hosts.iter().enumerate() {
            let socket = host
                .ns
                .enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, RECEIVER_PORT)))?
                .with_context(|| format!("binding the receiver in {}", host.ns.name()))?;
            // A receiver that falls behind for a moment (the machine is shared) must not
            // drop: 16 MB holds seconds of its traffic.
            let size: libc::c_int = 16 << 20;
            // SAFETY: setsockopt on a live socket with a c_int value.
            let ret = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
            if ret < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("setsockopt(SO_RCVBUFFORCE) on a receiver");
            }
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            let counters = counters.clone();
            traffic.threads.push(
                std::thread::Builder::new()
                    .name(format!("receive-{index}"))
                    .spawn(move || receive(&socket, &counters))?,
            );
        }
        for (index, &(host, ip)) in hosts.iter().enumerate() {
            let mut mine = Vec::new();
            for (id, flow) in counters.flows.iter().enumerate() {
                if flow.src != index {
                    continue;
                }
                // Each flow its own source port: its own 5-tuple.
                let socket = host
                    .ns
                    .enter(|| UdpSocket::bind((ip, 20_000 + id as u16)))?
                    .with_context(|| format!("binding flow {id} in {}", host.ns.name()))?;
                let to = SocketAddr::V4(SocketAddrV4::new(hosts[flow.dst].1, RECEIVER_PORT));
                mine.push((id, socket, to));
            }
            if mine.is_empty() {
                continue;
            }
            let host_rate = f64::from(rate) * mine.len() as f64 / counters.flows.len() as f64;
            let counters = counters.clone();
            traffic.threads.push(
                std::thread::Builder::new()
                    .name(format!("send-{index}"))
                    .spawn(move || send(&mine, host_rate, &counters))?,
            );
        }
        Ok(traffic)
    }

    /// Stop sending, let the last frames arrive (until none came for 300 ms), and return
    /// what each flow sent and received.
    pub fn finish(self) -> Vec<Totals> {
        self.counters.stop_sending.store(true, Ordering::Relaxed);
        let mut received = self.counters.totals().received;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.counters.totals().received;
            if now == received {
                break;
            }
            received = now;
        }
        (0..self.counters.flows.len())
            .map(|flow| self.counters.flow(flow))
            .collect()
    }
}

fn receive(socket: &UdpSocket, counters: &Counters) {
    let mut buf = [0u8; 2048];
    while !counters.stop.load(Ordering::Relaxed) {
        let Ok(len) = socket.recv(&mut buf) else {
            continue;
        };
        let now = Instant::now();
        if let Some((flow, seq)) = parse(&buf[..len])
            && let Some(received) = counters.received.get(flow)
        {
            received.lock().unwrap().record(seq, now);
        }
    }
}

/// Send round-robin over `flows` at `rate` frames per second, on a 1 ms schedule.
fn send(flows: &[(usize, UdpSocket, SocketAddr)], rate: f64, counters: &Counters) {
    let start = Instant::now();
    let (mut scheduled, mut next_flow) = (0u64, 0usize);
    let mut seqs = vec![0u64; flows.len()];
    while !counters.stop_sending.load(Ordering::Relaxed) && !counters.stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if due > scheduled + MAX_BURST {
            counters
                .skipped
                .fetch_add(due - MAX_BURST - scheduled, Ordering::Relaxed);
            scheduled = due - MAX_BURST;
        }
        while scheduled < due {
            let (id, socket, to) = &flows[next_flow];
            match socket.send_to(&frame(*id as u32, seqs[next_flow]), to) {
                Ok(_) => {
                    seqs[next_flow] += 1;
                    counters.sent[*id].fetch_add(1, Ordering::Relaxed);
                }
                // Not sent, so not lost: the sequence number is used by the next frame.
                Err(_) => {
                    counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            scheduled += 1;
            next_flow = (next_flow + 1) % flows.len();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
