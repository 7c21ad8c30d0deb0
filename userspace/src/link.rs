//! Kernel network interfaces: name lookups, and the link-sync module that mirrors every
//! interface of the namespace into StateDb's `link` table through rtnetlink.

use std::{collections::BTreeMap, ffi::CString};

use anyhow::Context as _;
use futures::StreamExt as _;
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage, State},
    },
    sys::{AsyncSocket as _, SocketAddr},
};

use crate::{mac::MacAddr, statedb::LinkState, supervisor::ModuleCtx};

/// The ifindex of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

fn oper_state(state: &State) -> String {
    match state {
        State::Up => "up".into(),
        State::Down => "down".into(),
        State::LowerLayerDown => "lowerlayerdown".into(),
        State::Dormant => "dormant".into(),
        State::Testing => "testing".into(),
        State::NotPresent => "notpresent".into(),
        State::Unknown => "unknown".into(),
        State::Other(n) => format!("other({n})"),
        _ => "unknown".into(),
    }
}

/// A link message as a `link` row (None if it carries no name).
fn link_state(msg: &LinkMessage) -> Option<LinkState> {
    let mut link = LinkState {
        name: String::new(),
        ifindex: msg.header.index,
        oper_state: "unknown".into(),
        mac: None,
        mtu: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::OperState(state) => link.oper_state = oper_state(state),
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}

/// The link-sync module: a full dump, then every RTM_NEWLINK/RTM_DELLINK as it happens.
pub async fn run(ctx: ModuleCtx) -> anyhow::Result<()> {
    let (mut connection, handle, mut messages) =
        rtnetlink::new_connection().context("opening rtnetlink")?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .context("subscribing to link notifications")?;
    let connection = tokio::spawn(connection);
    let _stop_connection = AbortOnDrop(connection);

    // Notifications that race with the dump queue up in `messages` and are applied after
    // it, so the table ends up current either way.
    let mut dump = handle.link().get().execute();
    let mut links = BTreeMap::new();
    while let Some(msg) = dump.next().await {
        let msg = msg.context("dumping links")?;
        if let Some(link) = link_state(&msg) {
            links.insert(link.name.clone(), link);
        }
    }
    ctx.db.write_observed(|tx| {
        let gone: Vec<String> = tx
            .observed()
            .links
            .keys()
            .filter(|name| !links.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            tx.link(&name, None);
        }
        for (name, link) in links {
            tx.link(&name, Some(link));
        }
    });

    loop {
        tokio::select! {
            message = messages.next() => {
                let (message, _) = message.context("rtnetlink connection closed")?;
                let NetlinkPayload::InnerMessage(message) = message.payload else {
                    continue;
                };
                match message {
                    RouteNetlinkMessage::NewLink(msg) => {
                        if let Some(link) = link_state(&msg) {
                            // A rename shows up as a new name on a known ifindex.
                            ctx.db.write_observed(|tx| {
                                let renamed: Vec<String> = tx
                                    .observed()
                                    .links
                                    .values()
                                    .filter(|l| l.ifindex == link.ifindex && l.name != link.name)
                                    .map(|l| l.name.clone())
                                    .collect();
                                for name in renamed {
                                    tx.link(&name, None);
                                }
                                tx.link(&link.name.clone(), Some(link));
                            });
                        }
                    }
                    RouteNetlinkMessage::DelLink(msg) => {
                        if let Some(link) = link_state(&msg) {
                            ctx.db.write_observed(|tx| tx.link(&link.name, None));
                        }
                    }
                    _ => {}
                }
            }
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
