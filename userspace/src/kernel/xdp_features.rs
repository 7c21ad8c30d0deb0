//! What XDP a port's driver supports, as the kernel reports it through the `netdev`
//! generic netlink family (kernel >= 6.3): `ip`-style `xdp-features` flags.

use std::fmt;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer,
    NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{
    GenlFamily, GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_sys::{Socket, protocols::NETLINK_GENERIC};

use super::netlink;

const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// `enum netdev_xdp_act`.
const XDP_ACT: [(u64, &str); 7] = [
    (1 << 0, "basic"),
    (1 << 1, "redirect"),
    (1 << 2, "ndo-xmit"),
    (1 << 3, "xsk-zerocopy"),
    (1 << 4, "hw-offload"),
    (1 << 5, "rx-sg"),
    (1 << 6, "ndo-xmit-sg"),
];

/// The XDP features of a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpFeatures(pub u64);

impl XdpFeatures {
    /// Native XDP programs run in the driver (XDP_PASS/DROP/TX at least).
    pub fn native(self) -> bool {
        self.0 & 1 != 0
    }

    /// Native XDP programs may return XDP_REDIRECT.
    pub fn redirect(self) -> bool {
        self.0 & (1 << 1) != 0
    }

    /// The device accepts frames other ports redirect to it with XDP (ndo_xdp_xmit).
    pub fn ndo_xmit(self) -> bool {
        self.0 & (1 << 2) != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        XDP_ACT
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

impl fmt::Display for XdpFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.names() {
            names if names.is_empty() => f.write_str("none"),
            names => f.write_str(&names.join(",")),
        }
    }
}

#[derive(Debug, Clone)]
enum DevAttr {
    Ifindex(u32),
    XdpFeatures(u64),
    Other(DefaultNla),
}

impl Nla for DevAttr {
    fn value_len(&self) -> usize {
        match self {
            DevAttr::Ifindex(_) => 4,
            DevAttr::XdpFeatures(_) => 8,
            DevAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DevAttr::Ifindex(_) => NETDEV_A_DEV_IFINDEX,
            DevAttr::XdpFeatures(_) => NETDEV_A_DEV_XDP_FEATURES,
            DevAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DevAttr::Ifindex(i) => buffer[..4].copy_from_slice(&i.to_ne_bytes()),
            DevAttr::XdpFeatures(f) => buffer[..8].copy_from_slice(&f.to_ne_bytes()),
            DevAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DevAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match (buf.kind(), value.len()) {
            (NETDEV_A_DEV_IFINDEX, 4) => {
                DevAttr::Ifindex(u32::from_ne_bytes(value.try_into().unwrap_or_default()))
            }
            (NETDEV_A_DEV_XDP_FEATURES, 8) => {
                DevAttr::XdpFeatures(u64::from_ne_bytes(value.try_into().unwrap_or_default()))
            }
            _ => DevAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A message of the `netdev` family.
#[derive(Debug, Clone)]
struct NetdevDev {
    cmd: u8,
    attrs: Vec<DevAttr>,
}

impl GenlFamily for NetdevDev {
    fn family_name() -> &'static str {
        "netdev"
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for NetdevDev {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for NetdevDev {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| DevAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// Why the features could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XdpFeaturesError {
    #[error("generic netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel has no netdev generic netlink family (before 6.3)")]
    NoFamily,
    #[error("kernel error {0}")]
    Kernel(i32),
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// One request, one reply (or an error) on `socket`.
fn request<F>(socket: &Socket, message: GenlMessage<F>) -> Result<GenlMessage<F>, XdpFeaturesError>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + fmt::Debug,
{
    netlink::send(socket, NetlinkMessage::from(message), 0)?;
    match netlink::reply::<GenlMessage<F>>(socket)?.payload {
        NetlinkPayload::InnerMessage(inner) => Ok(inner),
        NetlinkPayload::Error(e) => Err(XdpFeaturesError::Kernel(e.code.map_or(0, |c| c.get()))),
        other => Err(XdpFeaturesError::Reply(format!("{other:?}"))),
    }
}

/// The XDP features the driver of `ifindex` reports (in the caller's network namespace).
pub fn xdp_features(ifindex: u32) -> Result<XdpFeatures, XdpFeaturesError> {
    let socket = netlink::socket(NETLINK_GENERIC)?;

    let mut get_family = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(NetdevDev::family_name().into())],
    });
    get_family.finalize();
    let family = match request(&socket, get_family) {
        Ok(reply) => reply
            .payload
            .nlas
            .iter()
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or(XdpFeaturesError::NoFamily)?,
        Err(XdpFeaturesError::Kernel(_)) => return Err(XdpFeaturesError::NoFamily),
        Err(e) => return Err(e),
    };

    let mut get_dev = GenlMessage::from_payload(NetdevDev {
        cmd: NETDEV_CMD_DEV_GET,
        attrs: vec![DevAttr::Ifindex(ifindex)],
    });
    get_dev.set_resolved_family_id(family);
    get_dev.finalize();
    let reply = request(&socket, get_dev)?;
    reply
        .payload
        .attrs
        .iter()
        .find_map(|a| match a {
            DevAttr::XdpFeatures(f) => Some(XdpFeatures(*f)),
            _ => None,
        })
        .ok_or_else(|| XdpFeaturesError::Reply("no xdp-features attribute".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_names() {
        assert_eq!(XdpFeatures(0).to_string(), "none");
        assert_eq!(XdpFeatures(7).to_string(), "basic,redirect,ndo-xmit");
        assert!(XdpFeatures(3).redirect() && !XdpFeatures(3).ndo_xmit());
    }
}
