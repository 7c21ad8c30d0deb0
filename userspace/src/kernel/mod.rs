//! The kernel module: the one module that talks to the kernel over rtnetlink. It mirrors
//! links, routes (main and local tables), neighbours and the FDB of its bridges into
//! StateDb, and makes the kernel carry the L3 config (SVI netdevs, router MAC, addresses
//! and config routes) and the switchdev ports (bridges, membership, static FDB entries).

pub mod bridge;
pub mod l3;
pub mod link;
pub mod neigh;
pub mod netlink;
pub mod route;
pub mod xdp_features;

use std::{collections::BTreeMap, os::fd::AsRawFd as _, sync::Arc};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle,
    constants::{
        RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
        RTMGRP_NEIGH,
    },
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::sync::broadcast;

use crate::{
    statedb::{CHUNK_ROWS, Commit, KernelFeatures, KernelTx, KernelWriter, LinkState, Table},
    supervisor::ModuleCtx,
};

/// Every link the kernel has.
async fn links(handle: &Handle) -> anyhow::Result<Vec<rtnetlink::packet_route::link::LinkMessage>> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("dumping links")
}

/// Load the complete kernel state into StateDb: links, neighbours and the bridge's FDB in
/// one commit, then the routes in chunks ([`load_routes`], which says whether the config
/// must be applied again).
async fn dump(
    handle: &Handle,
    db: &KernelWriter,
    commits: &mut broadcast::Receiver<Arc<Commit>>,
) -> anyhow::Result<bool> {
    let links = links(handle).await?;
    let neighbours: Vec<_> = handle
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .context("dumping neighbors")?;
    let bridge_fdb = bridge::dump_fdb(handle).await?;
    // In the same commit as the links: a switch port is put on a backend by what the
    // kernel can do.
    let states = links
        .iter()
        .filter_map(link::link_state)
        .map(|l| (l.name.clone(), l))
        .collect();
    let features = probe(handle, db, &states).await;
    db.write(|tx| {
        tx.kernel_features(features);
        link::replace_all(tx, &links);
        neigh::replace_all(tx, &neighbours);
        // The dump has every bridge FDB entry there is: rebuild the bridge's rows.
        let bridge_rows: Vec<_> = tx.observed().bridge_fdb.keys().copied().collect();
        for (vlan, mac) in bridge_rows {
            tx.bridge_fdb(vlan, mac, None);
        }
        for message in &bridge_fdb {
            bridge::fdb_update(tx, message, true);
        }
    });
    load_routes(db, commits).await
}

/// Read the kernel's routes into StateDb ([`route::load`]) off the async runtime, reading
/// the module's own subscription meanwhile: a commit stays in memory until every
/// subscriber has read it, and a large table goes through in hundreds of commits. Returns
/// whether a commit among them (or having missed some) asks for the config to be applied
/// again.
async fn load_routes(
    db: &KernelWriter,
    commits: &mut broadcast::Receiver<Arc<Commit>>,
) -> anyhow::Result<bool> {
    let writer = db.clone();
    let load = tokio::task::spawn_blocking(move || route::load(&writer));
    tokio::pin!(load);
    let (mut reapply, mut open) = (false, true);
    loop {
        tokio::select! {
            loaded = &mut load => {
                loaded.context("the route dump panicked")??;
                return Ok(reapply);
            }
            commit = commits.recv(), if open => match commit {
                Ok(commit) => reapply |= relevant(&commit),
                Err(broadcast::error::RecvError::Lagged(_)) => reapply = true,
                Err(broadcast::error::RecvError::Closed) => open = false,
            },
        }
    }
}

async fn dump_links(handle: &Handle, db: &KernelWriter) -> anyhow::Result<()> {
    let links = links(handle).await?;
    db.write(|tx| link::replace_all(tx, &links));
    Ok(())
}

/// What the kernel can do, probed where not known yet (a probe that failed for another
/// reason than the kernel lacking the feature is tried again next time).
/// Only asked when some port may go on the switchdev backend (the probe loads the bridge).
async fn probe(
    handle: &Handle,
    db: &KernelWriter,
    links: &BTreeMap<String, LinkState>,
) -> KernelFeatures {
    let (mut features, needed) = db.read(|s| {
        (
            s.observed.kernel.clone(),
            crate::switchdev::may_bridge(&s.config, links),
        )
    });
    if needed && features.bridge_vlan_filtering.is_none() {
        match bridge::probe(handle).await {
            Ok(probed) => features = probed,
            Err(e) => tracing::warn!("{e}"),
        }
    }
    features
}

/// Make the kernel carry the config: L3 and the switchdev ports, each whatever the other
/// did (the bridge records its failures per port; L3's error is returned).
async fn apply(handle: &Handle, db: &KernelWriter) -> anyhow::Result<()> {
    let links = db.read(|s| s.observed.links.clone());
    let features = probe(handle, db, &links).await;
    db.write(|tx| tx.kernel_features(features));
    // The bridge first: the SVIs of its VLANs are its uppers.
    bridge::apply(handle, db).await;
    l3::apply(handle, db).await
}

/// Mirror a link change; returns whether it may need the switchdev ports programmed
/// again: a switch port (appearing, going, getting a switch ID) or a bridge or CPU port
/// of ours.
fn link_notification(
    tx: &mut KernelTx<'_>,
    message: &rtnetlink::packet_route::link::LinkMessage,
    present: bool,
) -> bool {
    // A bridge reports its ports' bridge state (VLANs, port state) as AF_BRIDGE link
    // messages (a DELLINK when a port leaves the bridge): they are not the link's state and
    // carry only part of it, but on a port of ours they may undo what xnos programmed
    // (`bridge vlan del` by hand, say).
    if message.header.interface_family == rtnetlink::packet_route::AddressFamily::Bridge {
        let observed = tx.observed();
        return observed
            .links
            .values()
            .find(|l| l.ifindex == message.header.index)
            .is_some_and(|l| {
                observed.bridge_ports.contains_key(&l.name)
                    || l.alias.as_deref() == Some(crate::switchdev::BRIDGE_ALIAS)
            });
    }
    // (An SVI too: a VLAN upper of the bridge has no peer whose carrier tells when it is
    // set down.)
    let relevant = link::link_state(message).is_some_and(|l| {
        tx.observed().port_status.contains_key(&l.name)
            || l.name.starts_with("xbr")
            || l.name.starts_with("xcpu")
            || l.alias.as_deref() == Some(l3::SVI_ALIAS)
    });
    link::update(tx, message, present);
    relevant
}

/// Apply one notification; returns whether it may have undone config the kernel should
/// carry (so that the desired state is written again).
fn notification(tx: &mut KernelTx<'_>, message: RouteNetlinkMessage) -> bool {
    match message {
        RouteNetlinkMessage::NewLink(m) => return link_notification(tx, &m, true),
        RouteNetlinkMessage::DelLink(m) => return link_notification(tx, &m, false),
        RouteNetlinkMessage::NewRoute(m) => route::update(tx, &m, true),
        RouteNetlinkMessage::DelRoute(m) => route::update(tx, &m, false),
        RouteNetlinkMessage::NewNeighbour(m) => {
            neigh::update(tx, &m, true);
            bridge::fdb_update(tx, &m, true);
        }
        RouteNetlinkMessage::DelNeighbour(m) => {
            neigh::update(tx, &m, false);
            bridge::fdb_update(tx, &m, false);
        }
        RouteNetlinkMessage::DelAddress(_) => return true,
        _ => return false,
    }
    false
}

/// Whether a notification may make a nexthop reachable that was not.
fn may_change_reachability(message: &RouteNetlinkMessage) -> bool {
    matches!(
        message,
        RouteNetlinkMessage::NewLink(_)
            | RouteNetlinkMessage::NewAddress(_)
            | RouteNetlinkMessage::NewRoute(_)
            | RouteNetlinkMessage::DelRoute(_)
    )
}

/// Does a commit change what the kernel should carry?
fn relevant(commit: &Commit) -> bool {
    commit.changes.iter().any(|c| {
        matches!(
            c.table,
            Table::Interface
                | Table::Route
                | Table::Switch
                | Table::Vlan
                | Table::Port
                | Table::FdbStatic
        )
    })
}

type Notification = (NetlinkMessage<RouteNetlinkMessage>, SocketAddr);

/// How often what the kernel does not notify about is checked (a bridge's options).
const AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Receive buffer of the notification socket.
const NOTIFICATION_BUFFER: libc::c_int = 64 << 20;

/// SO_RCVBUFFORCE (root) goes past net.core.rmem_max; without it we keep the default.
fn force_rcvbuf(fd: std::os::fd::RawFd, bytes: libc::c_int) {
    // SAFETY: setsockopt with a valid fd and an int option.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot enlarge the netlink receive buffer");
    }
}

pub async fn run(ctx: ModuleCtx, db: KernelWriter) -> anyhow::Result<()> {
    let (mut connection, handle, mut messages) =
        rtnetlink::new_connection().context("opening rtnetlink")?;
    let groups = RTMGRP_LINK
        | RTMGRP_NEIGH
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_ROUTE
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV6_IFADDR;
    let socket = connection.socket_mut().socket_mut();
    socket
        .bind(&SocketAddr::new(0, groups))
        .context("subscribing to link, route, neighbor and address notifications")?;
    // Room for a burst of route changes (a routing daemon converging); if even this
    // overflows, the overrun is noticed below and the tables are dumped again.
    force_rcvbuf(socket.as_raw_fd(), NOTIFICATION_BUFFER);
    let _connection = AbortOnDrop(tokio::spawn(connection));
    // Changes go through a second socket: the kernel does not notify the socket that made
    // a change, and the listening one must hear about ours too.
    let (writer_connection, writer, _) =
        rtnetlink::new_connection().context("opening rtnetlink")?;
    let _writer_connection = AbortOnDrop(tokio::spawn(writer_connection));
    let mut commits = db.commits();

    // Notifications that race with the dump queue up and are applied after it. (The config
    // is applied next whatever the dump saw.)
    dump(&handle, &db, &mut commits).await?;
    let applied = apply(&writer, &db).await;
    // The netdevs apply made (SVIs, CPU ports) go into StateDb before the sync counts as
    // done, so that the datapath has attached to them too when xnosd reports ready.
    dump_links(&handle, &db).await?;
    // Synced even when apply failed: the kernel's state is read, what failed is in the
    // status rows and the module's error, and the API must come up to show it.
    ctx.synced();
    applied?;
    let mut audit = tokio::time::interval(AUDIT_INTERVAL);
    audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = audit.tick() => {
                if bridge::filtering_lost(&writer, &db).await {
                    apply(&writer, &db).await?;
                }
            }
            first = messages.next() => {
                let first: Notification = first.context("rtnetlink connection closed")?;
                // Take whatever else is already queued: one commit for a burst of routes,
                // of at most CHUNK_ROWS (the rest are the next commit's).
                let mut batch = vec![first];
                while batch.len() < CHUNK_ROWS
                    && let Ok(more) = messages.try_recv()
                {
                    batch.push(more);
                }
                let ((reapply, overrun, reachability, address_gone), _) = db.write(|tx| {
                    let (mut reapply, mut overrun, mut reachability, mut address_gone) =
                        (false, false, false, false);
                    for (message, _) in batch {
                        match message.payload {
                            NetlinkPayload::InnerMessage(message) => {
                                reachability |= may_change_reachability(&message);
                                address_gone |=
                                    matches!(message, RouteNetlinkMessage::DelAddress(_));
                                reapply |= notification(tx, message);
                            }
                            NetlinkPayload::Overrun(_) => overrun = true,
                            _ => {}
                        }
                    }
                    (reapply, overrun, reachability, address_gone)
                });
                // A config route the kernel refused is tried again when what it needs
                // (an address on its nexthop's subnet, a link up) may have come.
                let retry = reachability
                    && db.read(|s| s.observed.route_status.values().any(|r| r.error.is_some()));
                let mut relevant_commit = false;
                if overrun {
                    // Notifications were lost: the kernel's tables are the truth, read them.
                    tracing::warn!("netlink notifications overran; reading the kernel tables again");
                    relevant_commit = dump(&handle, &db, &mut commits).await?;
                } else if address_gone {
                    // The kernel deletes IPv4 routes through a subnet whose address goes
                    // without a notification for each: read them again.
                    relevant_commit = load_routes(&db, &mut commits).await?;
                }
                if reapply || overrun || retry || relevant_commit {
                    apply(&writer, &db).await?;
                }
            }
            commit = commits.recv() => match commit {
                Ok(commit) if relevant(&commit) => apply(&writer, &db).await?,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => apply(&writer, &db).await?,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ctx.fault() => {}
            _ = ctx.stopping() => return Ok(()),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
