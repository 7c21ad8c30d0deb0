//! Answers that list a large table, streamed: made a chunk at a time, each chunk under its
//! own read lock of StateDb and from the key where the one before stopped. xnosd holds a
//! chunk or two of JSON and no copy of the table, and a listing of a million rows never
//! keeps writers out for long. A row that changes while the listing goes on shows as its
//! chunk found it (a row before the cursor is not sent again, one after it is sent as it
//! is then).

use std::{collections::BTreeMap, convert::Infallible, ops::Bound};

use http_body_util::{BodyExt as _, channel::Channel};
use hyper::{Response, body::Bytes};
use serde::Serialize;

use super::{
    Body, RowView, json_response,
    views::{self, L3CountersView},
};
use crate::statedb::{State, StateDb, Table, TableVisitor, visit_table};

/// How many bytes of a streamed answer are serialised before they are handed on.
pub(super) const STREAM_CHUNK: usize = 64 << 10;

/// Appends the next part of an answer to a chunk under one read lock; true once it wrote
/// the last of it.
type Next = Box<dyn FnMut(&State, &mut Vec<u8>) -> bool + Send>;

/// The chunks of one streamed answer: `head`, the parts `next` makes, `tail`.
pub(super) struct Chunks {
    head: Vec<u8>,
    next: Next,
    /// None once the last chunk went.
    tail: Option<Vec<u8>>,
    /// How many bytes make a chunk (`next` stops past it), for the buffer's capacity.
    chunk: usize,
}

impl Chunks {
    fn new(head: &[u8], chunk: usize, next: Next, tail: Vec<u8>) -> Self {
        Self {
            head: head.to_vec(),
            next,
            tail: Some(tail),
            chunk,
        }
    }

    /// The next chunk, made under a read lock of `db`; None once the answer is complete.
    pub(super) fn next_chunk(&mut self, db: &StateDb) -> Option<Vec<u8>> {
        let tail = self.tail.as_mut()?;
        // A chunk passes its size by at most one element.
        let mut out = Vec::with_capacity(self.chunk + 4096);
        out.append(&mut self.head);
        if db.read(|state| (self.next)(state, &mut out)) {
            out.append(tail);
            self.tail = None;
        }
        Some(out)
    }

    /// The whole answer at once (what a client reads).
    #[cfg(test)]
    pub(super) fn collect(mut self, db: &StateDb) -> Vec<u8> {
        std::iter::from_fn(|| self.next_chunk(db))
            .flatten()
            .collect()
    }
}

/// Stream `chunks` as a JSON answer: a chunk is made when fewer than two wait for the
/// client, so that one that reads slowly (or not at all) holds up no more than that.
pub(super) fn respond(db: std::sync::Arc<StateDb>, mut chunks: Chunks) -> Response<Body> {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(2);
    tokio::spawn(async move {
        while let Some(chunk) = chunks.next_chunk(&db) {
            if tx.send_data(chunk.into()).await.is_err() {
                return;
            }
        }
    });
    json_response(Response::new(body.boxed()))
}

/// A JSON array written in key order, a chunk at a time: where the next chunk starts.
struct Listing<K> {
    /// After the key of the last element written.
    after: Bound<K>,
    /// Whether an element was written: the next one needs a comma before it.
    written: bool,
    /// How many bytes make a chunk.
    chunk: usize,
}

impl<K: Clone> Listing<K> {
    fn new(chunk: usize) -> Self {
        Self {
            after: Bound::Unbounded,
            written: false,
            chunk,
        }
    }

    /// Where the elements of the next chunk start.
    fn after(&self) -> Bound<K> {
        self.after.clone()
    }

    /// Append `elements` (in key order, from [`Listing::after`] on) to `out` until it holds
    /// a chunk; true when they ran out first.
    fn fill<V: Serialize>(
        &mut self,
        out: &mut Vec<u8>,
        elements: impl IntoIterator<Item = (K, V)>,
    ) -> bool {
        for (key, element) in elements {
            self.push(out, &element);
            self.after = Bound::Excluded(key);
            if out.len() >= self.chunk {
                return false;
            }
        }
        true
    }

    /// Append one element with no key: they go after every keyed one, in the last chunk.
    fn push(&mut self, out: &mut Vec<u8>, element: &impl Serialize) {
        if std::mem::replace(&mut self.written, true) {
            out.push(b',');
        }
        serde_json::to_writer(out, element).expect("API views serialise");
    }
}

/// `GET /v1/db/<table>`: the rows as `Vec<RowView>` serialises.
pub(super) fn table(table: Table, chunk: usize) -> Chunks {
    Chunks::new(
        b"[",
        chunk,
        visit_table(table, TableRows(chunk)),
        b"]".to_vec(),
    )
}

/// Makes the `next` of a table's listing, typed by the table's key.
struct TableRows(usize);

impl TableVisitor for TableRows {
    type Output = Next;

    fn map<K, R>(self, rows: fn(&State) -> &BTreeMap<K, R>, key: fn(&K) -> String) -> Next
    where
        K: Ord + Clone + Send + 'static,
        R: Clone + Serialize + Send + 'static,
    {
        let mut listing = Listing::new(self.0);
        Box::new(move |state, out| {
            let from = (listing.after(), Bound::Unbounded);
            listing.fill(
                out,
                rows(state).range(from).map(|(k, r)| {
                    let row = serde_json::to_value(r).expect("table rows serialise to JSON");
                    (k.clone(), RowView { key: key(k), row })
                }),
            )
        })
    }

    fn one<R: Serialize + 'static>(self, key: &'static str, row: fn(&State) -> &R) -> Next {
        let mut listing = Listing::<()>::new(self.0);
        Box::new(move |state, out| {
            let row = serde_json::to_value(row(state)).expect("table rows serialise to JSON");
            listing.push(
                out,
                &RowView {
                    key: key.into(),
                    row,
                },
            );
            true
        })
    }
}

/// `GET /v1/fdb`: what [`views::fdb`] returns.
pub(super) fn fdb(chunk: usize) -> Chunks {
    let mut listing = Listing::new(chunk);
    let next = move |state: &State, out: &mut Vec<u8>| {
        let from = listing.after();
        listing.fill(out, views::fdb_views(state, from))
    };
    Chunks::new(b"[", chunk, Box::new(next), b"]".to_vec())
}

/// `GET /v1/neighbors`: what [`views::neighbors`] returns.
pub(super) fn neighbors(chunk: usize) -> Chunks {
    let mut listing = Listing::new(chunk);
    let next = move |state: &State, out: &mut Vec<u8>| {
        let names = views::ifnames(state);
        let from = listing.after();
        listing.fill(out, views::neighbor_views(state, &names, from))
    };
    Chunks::new(b"[", chunk, Box::new(next), b"]".to_vec())
}

/// `GET /v1/routes`: what [`views::routes`] returns, with the counters read now.
pub(super) fn routes(counters: &L3CountersView, chunk: usize) -> Chunks {
    let mut listing = Listing::new(chunk);
    let next = move |state: &State, out: &mut Vec<u8>| {
        let names = views::ifnames(state);
        let from = listing.after();
        if !listing.fill(out, views::route_views(state, &names, from)) {
            return false;
        }
        for view in views::refused_routes(state) {
            listing.push(out, &view);
        }
        true
    };
    let mut tail = b"],\"counters\":".to_vec();
    serde_json::to_writer(&mut tail, counters).expect("counters serialise");
    tail.push(b'}');
    Chunks::new(b"{\"routes\":[", chunk, Box::new(next), tail)
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{
        api::{FdbKind, FdbView, NeighborView, RoutesView},
        config::Config,
        mac::MacAddr,
        statedb::{
            BridgeMac, DatapathWriter, FibNexthop, FibRoute, KernelWriter, LearnedBy, LearnedMac,
            LinkState, Neighbor, NeighborState, ProtocolName, RouteKind, RouteProtocol, RouteTable,
        },
    };

    /// A switch with a static MAC (02:00:00:00:00:01 in VLAN 10 on swp1).
    fn db() -> (Arc<StateDb>, KernelWriter, DatapathWriter) {
        let text = "[[vlan]]\nid = 10\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n\
                    [[fdb]]\nmac = \"02:00:00:00:00:01\"\nvlan = 10\nport = \"swp1\"\n";
        let db = StateDb::new(
            Config::parse("t.toml", text, |_: &str| true).unwrap(),
            |_: &str| true,
        );
        let w = db.writers();
        (db, w.kernel, w.datapath)
    }

    fn learn(dp: &DatapathWriter, vlan: u16, mac: u8, port: &str) {
        let mac = MacAddr([2, 0, 0, 0, 0, mac]);
        dp.write(|tx| {
            let row = LearnedMac {
                vlan,
                mac,
                port: port.into(),
                moves: 0,
            };
            tx.learned(vlan, mac, Some(row))
        });
    }

    fn forget(dp: &DatapathWriter, vlan: u16, mac: u8) {
        dp.write(|tx| tx.learned(vlan, MacAddr([2, 0, 0, 0, 0, mac]), None));
    }

    /// A table's rows as the API answered before it streamed them: one `Vec<RowView>`.
    fn whole_table(db: &StateDb, table: Table) -> Vec<u8> {
        let rows: Vec<RowView> = db
            .rows(table)
            .into_iter()
            .map(|(key, row)| RowView { key, row })
            .collect();
        serde_json::to_vec(&rows).unwrap()
    }

    fn all_chunks(mut chunks: Chunks, db: &StateDb) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| chunks.next_chunk(db)).collect()
    }

    // What this shows: at every chunk size a streamed table is, byte for byte, the answer
    // made at once, and parses back into the same rows; a chunk that ends exactly at a row
    // leaves the comma to the next one, and one that ends at the last row leaves the
    // closing bracket alone in the last chunk.
    #[test]
    fn a_streamed_table_is_the_answer_made_at_once_at_any_chunk_size() {
        let (db, _, dp) = db();
        for mac in 1..=5 {
            learn(&dp, 10, mac, "swp1");
        }
        let whole = whole_table(&db, Table::FdbLearned);
        for chunk in 1..=whole.len() + 1 {
            assert_eq!(
                String::from_utf8(table(Table::FdbLearned, chunk).collect(&db)).unwrap(),
                String::from_utf8(whole.clone()).unwrap(),
                "chunk size {chunk}"
            );
        }
        let rows: Vec<RowView> = serde_json::from_slice(&whole).unwrap();
        let expected: Vec<RowView> = db
            .rows(Table::FdbLearned)
            .into_iter()
            .map(|(key, row)| RowView { key, row })
            .collect();
        assert_eq!(rows, expected);

        let first_row = serde_json::to_vec(&rows[0]).unwrap().len();
        let chunks = all_chunks(table(Table::FdbLearned, 1 + first_row), &db);
        assert_eq!(chunks[0].len(), 1 + first_row, "'[' and the first row");
        assert!(chunks[1].starts_with(b",{\"key\":\"10/02:00:00:00:00:02\""));
        let chunks = all_chunks(table(Table::FdbLearned, whole.len() - 1), &db);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1], b"]");
    }

    #[test]
    fn an_empty_listing_is_one_chunk() {
        let (db, _, _) = db();
        for (chunks, answer) in [
            (table(Table::FdbLearned, 1), b"[]".to_vec()),
            (neighbors(1), b"[]".to_vec()),
            (
                routes(&L3CountersView::default(), 1),
                serde_json::to_vec(&RoutesView {
                    routes: Vec::new(),
                    counters: L3CountersView::default(),
                })
                .unwrap(),
            ),
        ] {
            assert_eq!(all_chunks(chunks, &db), [answer]);
        }
        // A table of one row, and the FDB of the one static MAC.
        assert_eq!(
            table(Table::Datapath, 1).collect(&db),
            whole_table(&db, Table::Datapath)
        );
        assert_eq!(
            all_chunks(fdb(1), &db).concat(),
            serde_json::to_vec(&db.read(views::fdb)).unwrap()
        );
    }

    // What this shows: rows that change between two chunks show as the chunk after the
    // change finds them: none is sent twice or out of order, a row behind the cursor is
    // not sent again (changed or not) and one ahead of it is sent as it is then.
    #[test]
    fn rows_that_change_between_chunks_show_as_their_chunk_found_them() {
        let (db, _, dp) = db();
        for mac in [2, 3, 4, 5] {
            learn(&dp, 10, mac, "swp1");
        }
        // One row a chunk.
        let mut chunks = table(Table::FdbLearned, 1);
        let mut answer = chunks.next_chunk(&db).unwrap();
        answer.extend(chunks.next_chunk(&db).unwrap());
        learn(&dp, 10, 1, "swp1"); // behind the cursor (02 and 03 were sent)
        learn(&dp, 10, 3, "swp2"); // sent already
        forget(&dp, 10, 4);
        learn(&dp, 10, 5, "swp2");
        learn(&dp, 10, 6, "swp1");
        answer.extend(std::iter::from_fn(|| chunks.next_chunk(&db)).flatten());
        let rows: Vec<RowView> = serde_json::from_slice(&answer).unwrap();
        let seen: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.row["port"].as_str().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                ("10/02:00:00:00:00:02", "swp1"),
                ("10/02:00:00:00:00:03", "swp1"),
                ("10/02:00:00:00:00:05", "swp2"),
                ("10/02:00:00:00:00:06", "swp1"),
            ]
        );
    }

    // What this shows: the FDB, neighbours and routes stream as the views made at once,
    // at every chunk size, and parse back into the same rows: FDB rows of one MAC from
    // config, the fast path and the kernel bridge keep their order across chunks.
    #[test]
    fn streamed_views_parse_back_into_the_views_made_at_once() {
        let (db, kernel, dp) = db();
        learn(&dp, 10, 1, "swp1");
        learn(&dp, 10, 2, "swp1");
        learn(&dp, 20, 1, "swp1");
        kernel.write(|tx| {
            tx.link("vlan10", Some(LinkState::up("vlan10", 9)));
            for (vlan, mac) in [(10, 1), (10, 3)] {
                let mac = MacAddr([2, 0, 0, 0, 0, mac]);
                let row = BridgeMac {
                    vlan,
                    mac,
                    port: "swp9".into(),
                    moves: 0,
                    offloaded: true,
                };
                tx.bridge_fdb(vlan, mac, Some(row));
            }
            for (ifindex, ip) in [
                (9, "10.0.10.2"),
                (9, "10.0.10.3"),
                (9, "ff02::1"),
                (3, "::1"),
            ] {
                let ip: IpAddr = ip.parse().unwrap();
                let row = Neighbor {
                    ip,
                    ifindex,
                    mac: Some(MacAddr([2, 0, 0, 0, 1, 2])),
                    state: NeighborState::Reachable,
                };
                tx.neighbor(ifindex, ip, Some(row));
            }
            for prefix in ["10.1.0.0/16", "10.2.0.0/16", "2001:db8::/32"] {
                let route = FibRoute {
                    prefix: prefix.parse().unwrap(),
                    table: RouteTable::Main,
                    tos: 0,
                    metric: 0,
                    kind: RouteKind::Unicast,
                    protocol: RouteProtocol::Named(ProtocolName::Bgp),
                    nexthops: smallvec::smallvec![FibNexthop {
                        gateway: None,
                        ifindex: 9,
                    }],
                    hardware: None,
                };
                tx.fib(route.key(), Some(route));
            }
        });
        let fdb_rows = db.read(views::fdb);
        let shared: Vec<(FdbKind, Option<LearnedBy>)> = fdb_rows
            .iter()
            .filter(|r| (r.vlan, r.mac) == (10, MacAddr([2, 0, 0, 0, 0, 1])))
            .map(|r| (r.kind, r.learned_by))
            .collect();
        assert_eq!(
            shared,
            [
                (FdbKind::Static, None),
                (FdbKind::Learned, Some(LearnedBy::Xdp)),
                (FdbKind::Learned, Some(LearnedBy::Bridge)),
            ]
        );
        let neighbor_rows = db.read(views::neighbors);
        assert_eq!(neighbor_rows.len(), 3, "multicast left out");
        let counters = L3CountersView {
            routed_v4: 7,
            ..Default::default()
        };
        let route_rows = db.read(|s| views::routes(s, counters.clone()));
        assert_eq!(route_rows.routes.len(), 3);
        let whole = [
            serde_json::to_vec(&fdb_rows).unwrap(),
            serde_json::to_vec(&neighbor_rows).unwrap(),
            serde_json::to_vec(&route_rows).unwrap(),
        ];
        for chunk in 1..=whole.iter().map(Vec::len).max().unwrap() {
            let streamed = [
                fdb(chunk).collect(&db),
                neighbors(chunk).collect(&db),
                routes(&counters, chunk).collect(&db),
            ];
            assert_eq!(streamed, whole, "chunk size {chunk}");
        }
        let parsed: Vec<FdbView> = serde_json::from_slice(&fdb(1).collect(&db)).unwrap();
        assert_eq!(parsed, fdb_rows);
        let parsed: Vec<NeighborView> = serde_json::from_slice(&neighbors(1).collect(&db)).unwrap();
        assert_eq!(parsed, neighbor_rows);
        let parsed: RoutesView =
            serde_json::from_slice(&routes(&counters, 1).collect(&db)).unwrap();
        assert_eq!(parsed, route_rows);
    }
}
