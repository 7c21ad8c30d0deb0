//! Links: name lookups, and mirroring kernel links into the `link` table.

use std::ffi::CString;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec,
    packet_route::link::{InfoData, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State},
};

use nix::net::if_::InterfaceFlags;

use crate::{
    config::{LinkFacts, Links},
    mac::MacAddr,
    statedb::{KernelTx, LinkState, OperState},
};

/// The ifindex of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

/// The kernel interfaces of this network namespace, as config validation sees them.
pub struct KernelLinks;

impl Links for KernelLinks {
    fn facts(&self, name: &str) -> Option<LinkFacts> {
        ifindex(name)?;
        // getifaddrs has an AF_PACKET entry, with the link's flags, for every link.
        let loopback = nix::ifaddrs::getifaddrs().ok().is_some_and(|mut all| {
            all.any(|a| a.interface_name == name && a.flags.contains(InterfaceFlags::IFF_LOOPBACK))
        });
        Some(LinkFacts { loopback })
    }
}

/// The kernel's messages for link `index`, as it has it now.
pub async fn get(handle: &Handle, index: u32) -> Result<Vec<LinkMessage>, rtnetlink::Error> {
    handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_collect()
        .await
}

/// The kind-specific data (IFLA_INFO_DATA) in link messages.
pub fn info_data(messages: &[LinkMessage]) -> impl Iterator<Item = &InfoData> {
    messages
        .iter()
        .flat_map(|m| &m.attributes)
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::Data(data) => Some(data),
            _ => None,
        })
}

fn oper_state(state: &State) -> OperState {
    match state {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::Testing => OperState::Testing,
        State::NotPresent => OperState::NotPresent,
        _ => OperState::Unknown,
    }
}

/// A link message as a `link` row (None if it carries no name).
pub fn link_state(msg: &LinkMessage) -> Option<LinkState> {
    let mut link = LinkState {
        name: String::new(),
        ifindex: msg.header.index,
        oper_state: OperState::Unknown,
        mac: None,
        mtu: None,
        alias: None,
        switch_id: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::OperState(state) => link.oper_state = oper_state(state),
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
            LinkAttribute::PhysSwitchId(id) if id.len > 0 => {
                link.switch_id = Some(
                    id.id[..id.len.min(id.id.len())]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
            }
            LinkAttribute::Controller(index) => link.master = Some(*index),
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}

pub fn replace_all(tx: &mut KernelTx<'_>, messages: &[LinkMessage]) {
    let links: Vec<LinkState> = messages.iter().filter_map(link_state).collect();
    let present: std::collections::BTreeSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let gone: Vec<String> = tx
        .observed()
        .links
        .keys()
        .filter(|name| !present.contains(name.as_str()))
        .cloned()
        .collect();
    for name in gone {
        tx.link(&name, None);
    }
    for link in links {
        tx.link(&link.name.clone(), Some(link));
    }
}

pub fn update(tx: &mut KernelTx<'_>, msg: &LinkMessage, present: bool) {
    let Some(link) = link_state(msg) else {
        return;
    };
    // A rename shows up as a new name on a known ifindex.
    let stale: Vec<String> = tx
        .observed()
        .links
        .values()
        .filter(|l| l.ifindex == link.ifindex && (l.name != link.name || !present))
        .map(|l| l.name.clone())
        .collect();
    for name in stale {
        tx.link(&name, None);
    }
    if present {
        tx.link(&link.name.clone(), Some(link));
        return;
    }
    // The kernel flushes the routes through a link that goes, and does not say so for
    // IPv4: drop them here, so that config routes through it are seen missing and put back
    // once the link is made again.
    let gone: Vec<_> = tx
        .observed()
        .fib
        .iter()
        .filter(|(_, route)| route.nexthops.iter().any(|nh| nh.ifindex == link.ifindex))
        .map(|(key, _)| *key)
        .collect();
    for key in gone {
        tx.fib(key, None);
    }
}

/// The alias of link `index`, read from the kernel now (StateDb may not have seen it yet).
async fn alias(handle: &Handle, index: u32) -> Result<Option<String>, rtnetlink::Error> {
    Ok(get(handle, index)
        .await?
        .iter()
        .flat_map(|m| &m.attributes)
        .find_map(|a| match a {
            LinkAttribute::IfAlias(alias) => Some(alias.clone()),
            _ => None,
        }))
}

/// Fail unless the existing link `name` carries `alias`, the mark of what xnos made: a
/// netdev of someone else's by one of xnos's names is never taken over nor deleted.
pub async fn ensure_made_by_xnos(
    handle: &Handle,
    index: u32,
    name: &str,
    mark: &str,
) -> anyhow::Result<()> {
    let found = alias(handle, index)
        .await
        .with_context(|| format!("reading {name} back"))?;
    anyhow::ensure!(
        found.as_deref() == Some(mark),
        "a netdev named {name} exists that xnos did not make"
    );
    Ok(())
}

/// Mark the link `name`, just made, with `mark` (the kernel ignores an alias given at
/// creation).
pub async fn mark_made_by_xnos(handle: &Handle, name: &str, mark: &str) -> anyhow::Result<()> {
    let index = ifindex(name).with_context(|| format!("{name} vanished"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).alias(mark).build())
        .execute()
        .await
        .with_context(|| format!("marking {name} as made by xnos"))
}
