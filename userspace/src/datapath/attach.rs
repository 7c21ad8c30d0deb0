//! Attachments that outlive xnosd: XDP through netlink (`IFLA_XDP` with a program fd), TC
//! as tcx programs attached with `BPF_PROG_ATTACH`. Neither is a BPF link: the kernel
//! holds them until they are replaced or removed, not until a file descriptor closes, so
//! the ports go on forwarding when xnosd stops, crashes or is upgraded, and a starting
//! xnosd finds its predecessor's programs (and through them the maps) on the ports.
//!
//! Every change is a compare-and-swap where the kernel offers one: a program replaces
//! another only if that is the one attached (`XDP_FLAGS_REPLACE` with
//! `IFLA_XDP_EXPECTED_FD`; tcx `BPF_F_REPLACE`), so a frame meets the old program or the
//! new one, never none, and never someone else's program is removed.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::programs::{ProgramFd, ProgramInfo, loaded_programs};
use aya_obj::generated::{BPF_F_REPLACE, bpf_attach_type, bpf_attr, bpf_cmd};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NetlinkMessage, NetlinkPayload};
use netlink_sys::protocols::NETLINK_ROUTE;
use rtnetlink::packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};

use super::AttachMode;
use crate::kernel::netlink;

/// `XDP_FLAGS_*` of include/uapi/linux/if_link.h.
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

fn mode_flag(mode: AttachMode) -> u32 {
    match mode {
        AttachMode::Native => XDP_FLAGS_DRV_MODE,
        _ => XDP_FLAGS_SKB_MODE,
    }
}

/// One rtnetlink request and its reply: the message asked for, or the kernel's ack.
fn route_request(
    message: RouteNetlinkMessage,
    flags: u16,
) -> io::Result<Option<RouteNetlinkMessage>> {
    let socket = netlink::socket(NETLINK_ROUTE)?;
    // The kernel's own words on a refusal ("MTU too large for XDP"), after the echoed
    // header alone.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    netlink::send(&socket, NetlinkMessage::from(message), flags)?;
    match netlink::reply::<RouteNetlinkMessage>(&socket)?.payload {
        NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(None),
            Some(code) => {
                let error = io::Error::from_raw_os_error(-code.get());
                Err(match extack_message(&e.header) {
                    Some(message) => io::Error::new(error.kind(), format!("{message} ({error})")),
                    None => error,
                })
            }
        },
        other => Err(io::Error::other(format!(
            "unexpected rtnetlink reply {other:?}"
        ))),
    }
}

/// `NLMSGERR_ATTR_MSG` of an error's extended ack: what follows the echoed request header
/// (16 bytes with `NETLINK_CAP_ACK`) is attributes.
fn extack_message(payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut attrs = payload.get(16..)?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
            return Some(String::from_utf8_lossy(&text[..end]).into_owned());
        }
        attrs = attrs.get((len + 3) & !3..)?;
    }
    None
}

/// The XDP program on a port, and in which mode: `None` when there is none.
pub fn xdp_program(ifindex: u32) -> io::Result<Option<(u32, AttachMode)>> {
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    let Some(RouteNetlinkMessage::NewLink(link)) =
        route_request(RouteNetlinkMessage::GetLink(request), 0)?
    else {
        return Err(io::Error::other("rtnetlink: no link in the reply"));
    };
    let Some(xdp) = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => Some(xdp),
        _ => None,
    }) else {
        return Ok(None);
    };
    let mode = xdp.iter().find_map(|x| match x {
        LinkXdp::Attached(XdpAttached::Driver) => Some(AttachMode::Native),
        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(AttachMode::Generic),
        _ => None,
    });
    let id = xdp.iter().find_map(|x| match x {
        LinkXdp::ProgId(id) => Some(*id),
        _ => None,
    });
    Ok(id.zip(mode))
}

/// Put `program` on the port's XDP hook in `mode`: in place of `expected` (atomically, and
/// only if `expected` is what is attached), or where nothing is attached. `program` None
/// removes `expected`.
pub fn xdp_set(
    ifindex: u32,
    program: Option<BorrowedFd<'_>>,
    expected: Option<BorrowedFd<'_>>,
    mode: AttachMode,
) -> io::Result<()> {
    let mut xdp = vec![LinkXdp::Fd(program.map_or(-1, |fd| fd.as_raw_fd()))];
    match expected {
        Some(expected) => {
            xdp.push(LinkXdp::Flags(mode_flag(mode) | XDP_FLAGS_REPLACE));
            xdp.push(LinkXdp::ExpectedFd(expected.as_raw_fd() as u32));
        }
        None => xdp.push(LinkXdp::Flags(
            mode_flag(mode) | XDP_FLAGS_UPDATE_IF_NOEXIST,
        )),
    }
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    request.attributes.push(LinkAttribute::Xdp(xdp));
    route_request(RouteNetlinkMessage::SetLink(request), NLM_F_ACK).map(|_| ())
}

/// The bpf(2) syscall; an error is the kernel's, as a raw OS error (`named` adds what
/// failed to errors that leave this module).
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<()> {
    // SAFETY: attr is a zero-initialised bpf_attr whose pointers (if any) point at
    // buffers that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An error of `what`, with the kernel's reason.
fn named(what: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integer fields, for which all zeroes is valid (and
    // what the kernel requires of the fields a command does not use).
    unsafe { std::mem::zeroed() }
}

/// The tcx ingress programs on a port, first to run first.
pub fn tcx_programs(ifindex: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = zeroed_attr();
    attr.query.__bindgen_anon_1.target_ifindex = ifindex;
    attr.query.attach_type = bpf_attach_type::BPF_TCX_INGRESS as u32;
    attr.query.prog_ids = ids.as_mut_ptr() as u64;
    attr.query.__bindgen_anon_2.count = ids.len() as u32;
    sys_bpf(bpf_cmd::BPF_PROG_QUERY, &mut attr)
        .map_err(named("bpf(BPF_PROG_QUERY, tcx ingress)"))?;
    // SAFETY: the kernel filled in the count.
    let count = unsafe { attr.query.__bindgen_anon_2.count } as usize;
    Ok(ids[..count.min(ids.len())].to_vec())
}

/// Attach `program` to the port's tcx ingress: in place of `replace` (atomically), or
/// appended.
pub fn tcx_attach(
    ifindex: u32,
    program: BorrowedFd<'_>,
    replace: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the fields of the prog-attach member of a zeroed union.
    unsafe {
        let a = &mut attr.__bindgen_anon_5;
        a.__bindgen_anon_1.target_ifindex = ifindex;
        a.attach_bpf_fd = program.as_raw_fd() as u32;
        a.attach_type = bpf_attach_type::BPF_TCX_INGRESS as u32;
        if let Some(old) = replace {
            a.attach_flags = BPF_F_REPLACE;
            a.replace_bpf_fd = old.as_raw_fd() as u32;
        }
    }
    let what = "bpf(BPF_PROG_ATTACH, tcx ingress)";
    sys_bpf(bpf_cmd::BPF_PROG_ATTACH, &mut attr).map_err(named(what))
}

/// Remove `program` from the port's tcx ingress.
pub fn tcx_detach(ifindex: u32, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the fields of the prog-attach member of a zeroed union.
    unsafe {
        let a = &mut attr.__bindgen_anon_5;
        a.__bindgen_anon_1.target_ifindex = ifindex;
        a.attach_bpf_fd = program.as_raw_fd() as u32;
        a.attach_type = bpf_attach_type::BPF_TCX_INGRESS as u32;
    }
    let what = "bpf(BPF_PROG_DETACH, tcx ingress)";
    sys_bpf(bpf_cmd::BPF_PROG_DETACH, &mut attr).map_err(named(what))
}

/// A loaded program by its ID, if it is still there.
pub fn program(id: u32) -> Option<ProgramInfo> {
    loaded_programs().flatten().find(|p| p.id() == id)
}

/// A program of xnos found on a port: how it is attached, its ID, its name, and a file
/// descriptor that keeps it alive while it is replaced.
pub struct Found {
    pub mode: AttachMode,
    pub info: ProgramInfo,
    pub fd: ProgramFd,
}

/// The programs named in `names` on the port's XDP hook and on its tcx ingress.
pub fn find(ifindex: u32, names: &[&str]) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut candidates: Vec<(u32, AttachMode)> = xdp_program(ifindex)?.into_iter().collect();
    // A port without tcx support (or gone) has nothing there.
    if let Ok(ids) = tcx_programs(ifindex) {
        candidates.extend(ids.into_iter().map(|id| (id, AttachMode::Tc)));
    }
    for (id, mode) in candidates {
        let Some(info) = program(id) else { continue };
        if !info.name_as_str().is_some_and(|n| names.contains(&n)) {
            continue;
        }
        let Ok(fd) = info.fd() else { continue };
        found.push(Found { mode, info, fd });
    }
    Ok(found)
}

/// Every link of this network namespace, by ifindex.
pub fn ifindexes() -> io::Result<Vec<u32>> {
    let socket = netlink::socket(NETLINK_ROUTE)?;
    let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
    netlink::send(&socket, NetlinkMessage::from(request), NLM_F_DUMP)?;
    let mut ifindexes = Vec::new();
    netlink::dump(&socket, |message| {
        if let RouteNetlinkMessage::NewLink(link) = message {
            ifindexes.push(link.header.index);
        }
    })?;
    Ok(ifindexes)
}

/// Copy every entry of one map into another of the same key and value sizes (a map whose
/// size or flags changed between builds); returns how many were copied. Entries that do
/// not fit (the new map is smaller) are left out and counted by the caller's difference.
pub fn copy_entries(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
) -> io::Result<usize> {
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; key_size];
    let mut value = vec![0u8; value_size];
    let mut copied = 0;
    // The map-element member of a bpf_attr; the buffers outlive each call.
    let elem = |map: BorrowedFd<'_>, key: u64, value: u64| {
        let mut attr = zeroed_attr();
        // SAFETY: writing the map-element member of a zeroed union.
        unsafe {
            let a = &mut attr.__bindgen_anon_2;
            a.map_fd = map.as_raw_fd() as u32;
            a.key = key;
            a.__bindgen_anon_1.value = value;
        }
        attr
    };
    loop {
        let current = key.as_ref().map_or(0, |k| k.as_ptr() as u64);
        let mut attr = elem(from, current, next.as_mut_ptr() as u64);
        match sys_bpf(bpf_cmd::BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(copied),
            Err(e) => return Err(named("bpf(BPF_MAP_GET_NEXT_KEY)")(e)),
        }
        // An entry deleted between the two calls is skipped.
        let mut attr = elem(from, next.as_ptr() as u64, value.as_mut_ptr() as u64);
        if sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr).is_ok() {
            let mut attr = elem(to, next.as_ptr() as u64, value.as_ptr() as u64);
            if sys_bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).is_ok() {
                copied += 1;
            }
        }
        key = Some(next.clone());
    }
}
