//! The states, kinds and reasons of StateDb rows: enums, each written in one case style
//! (kebab-case) wherever it appears: rows, API views, `--json`, metric label values and
//! config values.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// An enum whose values are written as fixed kebab-case words.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| {
                        let words: Vec<&str> = $name::ALL.iter().map(|v| v.name()).collect();
                        format!(
                            "unknown {} {s:?}; one of {}",
                            $crate::statedb::type_words(stringify!($name)),
                            words.join(", ")
                        )
                    })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use words;

/// A type's name as words, for messages: `PortModeName` is "port mode name".
pub fn type_words(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

words! {
    /// A link's operational state (RFC 2863, as the kernel reports it in IFLA_OPERSTATE).
    pub enum OperState {
        Up = "up",
        Down = "down",
        LowerLayerDown = "lower-layer-down",
        Dormant = "dormant",
        Testing = "testing",
        NotPresent = "not-present",
        Unknown = "unknown",
    }
}

words! {
    /// How a port is forwarded.
    pub enum DatapathMode {
        /// XDP in the driver.
        XdpNative = "xdp-native",
        /// XDP in the kernel's generic receive path.
        XdpGeneric = "xdp-generic",
        /// The same pipeline as a TC (tcx) ingress program.
        Tc = "tc",
        /// The kernel bridge (and the switch ASIC under it) forwards it.
        Switchdev = "switchdev",
        /// Not forwarded (see the port's error).
        None = "none",
    }
}

words! {
    /// A supervised module's state.
    pub enum ModuleState {
        Running = "running",
        /// Failed; starts again after its backoff.
        Restarting = "restarting",
        Stopped = "stopped",
    }
}

words! {
    /// The kernel routing table a route is in (xnos mirrors these two).
    pub enum RouteTable {
        Main = "main",
        Local = "local",
    }
}

words! {
    /// A route's type (RTN_*), as `ip route` names it.
    pub enum RouteKind {
        Unspec = "unspec",
        Unicast = "unicast",
        Local = "local",
        Broadcast = "broadcast",
        Anycast = "anycast",
        Multicast = "multicast",
        Blackhole = "blackhole",
        Unreachable = "unreachable",
        Prohibit = "prohibit",
        Throw = "throw",
        Nat = "nat",
        Xresolve = "xresolve",
        Other = "other",
    }
}

words! {
    /// What hardware does with a route, as the kernel reports (RTM_F_OFFLOAD, RTM_F_TRAP,
    /// RTM_F_OFFLOAD_FAILED, set by switchdev drivers).
    pub enum Hardware {
        Offloaded = "offloaded",
        /// The hardware sends the route's packets to the CPU.
        Trap = "trap",
        OffloadFailed = "offload-failed",
    }
}

words! {
    /// A neighbour entry's state (NUD_*), as `ip neigh` names it.
    pub enum NeighborState {
        Incomplete = "incomplete",
        Reachable = "reachable",
        Stale = "stale",
        Delay = "delay",
        Probe = "probe",
        Failed = "failed",
        Noarp = "noarp",
        Permanent = "permanent",
        None = "none",
        Other = "other",
    }
}

impl NeighborState {
    /// Whether the kernel's MAC for the neighbour can be used to forward.
    pub fn usable(self) -> bool {
        matches!(
            self,
            NeighborState::Reachable
                | NeighborState::Stale
                | NeighborState::Delay
                | NeighborState::Probe
                | NeighborState::Permanent
                | NeighborState::Noarp
        )
    }
}

words! {
    /// What the fast path does with packets to a prefix.
    pub enum RouteAction {
        /// Routes them itself, through a nexthop group.
        Forward = "forward",
        /// Recognises them as the switch's own and hands them to the kernel.
        Local = "local",
        /// Hands them to the kernel, which forwards them.
        Kernel = "kernel",
    }
}

words! {
    /// Who learned a MAC address.
    pub enum LearnedBy {
        /// The fast path (XDP or TC).
        Xdp = "xdp",
        /// The kernel bridge of the switchdev ports (or the switch ASIC under it).
        Bridge = "bridge",
    }
}

/// Who installed a route (RTPROT_*), as `ip route` names it; an unnamed number as itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteProtocol {
    Named(ProtocolName),
    Number(u8),
}

words! {
    /// The route protocols with a name (iproute2's rt_protos, and xnos's own).
    pub enum ProtocolName {
        Unspec = "unspec",
        Redirect = "redirect",
        Kernel = "kernel",
        Boot = "boot",
        Static = "static",
        Gated = "gated",
        Ra = "ra",
        Mrt = "mrt",
        Zebra = "zebra",
        Bird = "bird",
        Dnrouted = "dnrouted",
        Xorp = "xorp",
        Ntk = "ntk",
        Dhcp = "dhcp",
        Mrouted = "mrouted",
        Keepalived = "keepalived",
        Babel = "babel",
        Openr = "openr",
        Bgp = "bgp",
        Isis = "isis",
        Ospf = "ospf",
        Rip = "rip",
        Eigrp = "eigrp",
        /// Config routes xnosd installs (protocol 201).
        Xnos = "xnos",
    }
}

impl fmt::Display for RouteProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteProtocol::Named(name) => name.fmt(f),
            RouteProtocol::Number(n) => n.fmt(f),
        }
    }
}

impl FromStr for RouteProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u8>() {
            Ok(n) => Ok(RouteProtocol::Number(n)),
            Err(_) => s.parse().map(RouteProtocol::Named),
        }
    }
}

impl Serialize for RouteProtocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RouteProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kebab(word: &str) -> bool {
        !word.is_empty()
            && !word.starts_with('-')
            && !word.ends_with('-')
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    #[test]
    fn every_word_is_kebab_case_and_round_trips() {
        let words: Vec<(&str, String)> = OperState::ALL
            .iter()
            .map(|v| (v.name(), serde_json::to_string(v).unwrap()))
            .chain(
                DatapathMode::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                ModuleState::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                RouteTable::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                RouteKind::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                Hardware::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                NeighborState::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                RouteAction::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                LearnedBy::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .chain(
                ProtocolName::ALL
                    .iter()
                    .map(|v| (v.name(), serde_json::to_string(v).unwrap())),
            )
            .collect();
        for (word, json) in words {
            assert!(kebab(word), "{word:?} is not kebab-case");
            assert_eq!(json, format!("{word:?}"));
        }
        for drop in xnos_common::DropReason::ALL {
            assert!(kebab(drop.name()), "drop reason {:?}", drop.name());
        }
        for punt in xnos_common::PuntReason::ALL {
            assert!(kebab(punt.name()), "punt reason {:?}", punt.name());
        }
    }

    #[test]
    fn unknown_words_are_refused_with_the_choices() {
        assert_eq!(
            "sleeping".parse::<ModuleState>().unwrap_err(),
            "unknown module state \"sleeping\"; one of running, restarting, stopped"
        );
        assert_eq!(
            serde_json::from_str::<RouteProtocol>("\"42\"").unwrap(),
            RouteProtocol::Number(42)
        );
        assert_eq!(
            serde_json::to_string(&RouteProtocol::Named(ProtocolName::Bgp)).unwrap(),
            "\"bgp\""
        );
    }
}
