//! Frames for the packet fuzzer: well-formed Ethernet/802.1Q/QinQ, IPv4 (options,
//! fragments), IPv6 (extension headers), TCP/UDP/ICMP and ARP built with etherparse from
//! the switch's own addresses, then mutated (truncated, bytes flipped, lengths and versions
//! wrong, tags stacked), plus frames of pure random bytes.

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FragmentHeader,
    Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
};

use super::topology::{HOSTS, ROUTER};

/// SplitMix64: a seed reproduces a run on any machine and any crate version, which a
/// general-purpose RNG crate does not promise.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn word(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.word() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.word() % 100 < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.word() as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// The longest frame a port with a 1500-byte MTU receives (a veth takes MTU + Ethernet
/// header + one tag, whatever the frame carries): the fuzzer sends nothing a port could not
/// receive, so that a flood that cannot leave a port (a tag pushed on a frame already at
/// the limit) is no finding.
fn max_frame(frame: &[u8]) -> usize {
    if frame.get(12..14) == Some(&[0x81, 0x00]) {
        1518
    } else {
        1514
    }
}

/// A MAC from a pool small enough that learning never fills the FDB.
fn pool_mac(rng: &mut Rng) -> [u8; 6] {
    [2, 0xf0, 0, 0, rng.byte() & 0x3, rng.byte()]
}

fn dst_mac(rng: &mut Rng) -> [u8; 6] {
    match rng.below(100) {
        0..35 => ROUTER,
        35..60 => rng.pick(&HOSTS).mac,
        60..68 => [0xff; 6],
        68..73 => rng.pick(&[[1, 0, 0x5e, 0, 0, 5], [0x33, 0x33, 0, 0, 0, 1]]),
        73..77 => [1, 0x80, 0xc2, 0, 0, rng.byte() & 0x0f],
        77..90 => pool_mac(rng),
        _ => rng.bytes(6).try_into().expect("6 bytes"),
    }
}

fn src_mac(rng: &mut Rng) -> [u8; 6] {
    match rng.below(100) {
        0..60 => rng.pick(&HOSTS).mac,
        60..85 => pool_mac(rng),
        85..95 => {
            // Random but unicast: multicast sources are the next arm's.
            let mut mac: [u8; 6] = rng.bytes(6).try_into().expect("6 bytes");
            mac[0] &= 0xfe;
            mac
        }
        95..97 => [0; 6],
        97..99 => ROUTER,
        _ => [1, 0, 0x5e, 0, 0, 1],
    }
}

fn vid(rng: &mut Rng) -> u16 {
    match rng.below(10) {
        0..7 => rng.pick(&[0, 1, 10, 10, 20, 20, 30, 40, 4095]),
        _ => rng.word() as u16 & 0x0fff,
    }
}

/// An 802.1Q tag (or another TPID) with a random priority.
fn tag(rng: &mut Rng, tpid: u16) -> [u8; 4] {
    let tci = (u16::from(rng.byte() & 0xe0) << 8) | vid(rng);
    let [a, b] = tpid.to_be_bytes();
    let [c, d] = tci.to_be_bytes();
    [a, b, c, d]
}

/// The tags between the MACs and the EtherType: none, one, QinQ, or stacked.
fn tags(rng: &mut Rng) -> Vec<u8> {
    match rng.below(100) {
        0..45 => Vec::new(),
        45..85 => tag(rng, 0x8100).to_vec(),
        85..90 => [tag(rng, 0x88a8), tag(rng, 0x8100)].concat(),
        90..97 => [tag(rng, 0x8100), tag(rng, 0x8100)].concat(),
        _ => tag(rng, 0x9100).to_vec(),
    }
}

fn v4(rng: &mut Rng, dst: bool) -> [u8; 4] {
    let ours: &[[u8; 4]] = if dst {
        &[
            [10, 0, 20, 2],
            [10, 0, 20, 3],
            [10, 0, 20, 9],
            [10, 99, 1, 5],
            [10, 99, 2, 5],
            [10, 98, 0, 1],
            [10, 98, 7, 7],
            [10, 97, 0, 1],
            [10, 0, 10, 1],
            [10, 0, 20, 1],
            [10, 0, 10, 2],
            [10, 0, 10, 4],
            [192, 0, 2, 1],
            [224, 0, 0, 5],
            [255, 255, 255, 255],
            [127, 0, 0, 1],
        ]
    } else {
        &[
            [10, 0, 10, 2],
            [10, 0, 20, 2],
            [192, 0, 2, 7],
            [127, 0, 0, 1],
            [0, 1, 2, 3],
            [224, 0, 0, 5],
            [240, 0, 0, 1],
        ]
    };
    if rng.chance(85) {
        let mut addr = rng.pick(ours);
        if addr[0] == 10 && addr[1] >= 97 && rng.chance(50) {
            addr[3] = rng.byte();
        }
        addr
    } else {
        rng.bytes(4).try_into().expect("4 bytes")
    }
}

fn v6(rng: &mut Rng, dst: bool) -> [u8; 16] {
    let ours: &[&str] = if dst {
        &[
            "fd00:20::2",
            "fd00:20::3",
            "fd00:20::9",
            "fd00:98::1",
            "fd00:98::77",
            "fd00:10::1",
            "fd00:10::2",
            "fd00:10::4",
            "2001:db8::1",
            "ff02::1",
            "fe80::2",
            "::1",
        ]
    } else {
        &[
            "fd00:10::2",
            "fd00:20::2",
            "2001:db8::7",
            "fe80::1",
            "::",
            "::1",
            "ff02::1",
        ]
    };
    if rng.chance(85) {
        let mut addr = rng
            .pick(ours)
            .parse::<std::net::Ipv6Addr>()
            .expect("address literal")
            .octets();
        if addr[2..4] == [0, 0x98] && rng.chance(50) {
            addr[15] = rng.byte();
        }
        addr
    } else {
        rng.bytes(16).try_into().expect("16 bytes")
    }
}

fn hop_limit(rng: &mut Rng) -> u8 {
    let any = rng.byte();
    rng.pick(&[0, 1, 2, 64, 64, 64, 255, any])
}

/// A payload: mostly short, sometimes around an egress MTU (1500, or VLAN 10's 1400).
fn payload(rng: &mut Rng, headers: usize) -> Vec<u8> {
    let len = if rng.chance(8) {
        let mtu = rng.pick(&[1400, 1500]);
        (mtu - headers.min(mtu) - 4) + rng.below(8)
    } else {
        rng.below(64)
    };
    rng.bytes(len)
}

fn ipv4_header(rng: &mut Rng) -> Ipv4Header {
    let mut ip = Ipv4Header::new(
        0,
        hop_limit(rng),
        IpNumber::UDP,
        v4(rng, false),
        v4(rng, true),
    )
    .expect("an empty payload fits");
    ip.identification = rng.word() as u16;
    ip.dont_fragment = rng.chance(50);
    if rng.chance(15) {
        ip.more_fragments = rng.chance(60);
        ip.fragment_offset = IpFragOffset::try_new(rng.word() as u16 & 0x1fff).expect("13 bits");
    }
    if rng.chance(15) {
        let words = 1 + rng.below(10);
        // NOPs or random bytes: whatever the options mean, the
        // header length is what the datapath looks at.
        let mut options = rng.bytes(words * 4);
        if rng.chance(50) {
            options.iter_mut().for_each(|b| *b = 1);
        }
        ip.options = Ipv4Options::try_from(&options[..]).expect("a multiple of 4, at most 40");
    }
    ip
}

fn ext(rng: &mut Rng) -> Ipv6RawExtHeader {
    let len = 6 + 8 * rng.below(3);
    Ipv6RawExtHeader::new_raw(IpNumber::UDP, &rng.bytes(len)).expect("6 + 8n bytes")
}

fn ipv6_headers(rng: &mut Rng) -> (Ipv6Header, Ipv6Extensions) {
    let ip = Ipv6Header {
        traffic_class: rng.byte(),
        hop_limit: hop_limit(rng),
        source: v6(rng, false),
        destination: v6(rng, true),
        ..Default::default()
    };
    let mut exts = Ipv6Extensions::default();
    if rng.chance(30) {
        if rng.chance(50) {
            exts.hop_by_hop_options = Some(ext(rng));
        }
        if rng.chance(30) {
            exts.destination_options = Some(ext(rng));
        }
        if rng.chance(30) {
            exts.routing = Some(Ipv6RoutingExtensions {
                routing: ext(rng),
                final_destination_options: None,
            });
        }
        if rng.chance(50) {
            exts.fragment = Some(Ipv6FragmentHeader::new(
                IpNumber::UDP,
                IpFragOffset::try_new(rng.word() as u16 & 0x1fff).expect("13 bits"),
                rng.chance(50),
                rng.word() as u32,
            ));
        }
    }
    (ip, exts)
}

/// An IP packet (or ARP, or anything else) after the Ethernet header and tags, and its
/// EtherType.
fn network(rng: &mut Rng) -> (u16, Vec<u8>) {
    let ip = match rng.below(100) {
        0..45 => {
            let ip = ipv4_header(rng);
            IpHeaders::Ipv4(ip, Default::default())
        }
        45..80 => {
            let (ip, exts) = ipv6_headers(rng);
            IpHeaders::Ipv6(ip, exts)
        }
        80..90 => return (0x0806, arp(rng)),
        _ => {
            let any = rng.word() as u16;
            let ether_type = rng.pick(&[0x88b5, 0x88cc, 0x0800, 0x86dd, any]);
            let len = rng.below(80);
            return (ether_type, rng.bytes(len));
        }
    };
    let v6 = matches!(ip, IpHeaders::Ipv6(..));
    let ether_type = if v6 { 0x86dd } else { 0x0800 };
    // The MACs are written by the caller; the builder only supplies the rest.
    let builder = PacketBuilder::ethernet2([0; 6], [0; 6]).ip(ip);
    let mut out = Vec::new();
    let written = match rng.below(10) {
        0..4 => {
            let (sport, any) = (rng.word() as u16, rng.word() as u16);
            let b = builder.udp(sport, rng.pick(&[53, 443, any]));
            let p = payload(rng, b.size(0) - 14);
            b.write(&mut out, &p)
        }
        4..7 => {
            let b = builder.tcp(rng.word() as u16, 80, rng.word() as u32, 65535);
            let p = payload(rng, b.size(0) - 14);
            b.write(&mut out, &p)
        }
        7..9 if v6 => {
            let b = builder.icmpv6_echo_request(rng.word() as u16, rng.word() as u16);
            let p = payload(rng, b.size(0) - 14);
            b.write(&mut out, &p)
        }
        7..9 => {
            let b = builder.icmpv4_echo_request(rng.word() as u16, rng.word() as u16);
            let p = payload(rng, b.size(0) - 14);
            b.write(&mut out, &p)
        }
        _ => {
            let b = builder.udp(rng.word() as u16, 7);
            let p = payload(rng, b.size(0) - 14);
            b.write(&mut out, &p)
        }
    };
    written.expect("a well-formed packet serialises");
    (ether_type, out.split_off(14))
}

fn arp(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0, 1, 8, 0, 6, 4, 0, rng.pick(&[1, 2])];
    out.extend_from_slice(&rng.pick(&HOSTS).mac);
    out.extend_from_slice(&v4(rng, false));
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&v4(rng, true));
    out
}

/// Where the EtherType of the frame's payload is (after every tag), if inside the frame.
pub fn ether_type_at(frame: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let ether_type = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        if !matches!(ether_type, 0x8100 | 0x88a8 | 0x9100) {
            return Some(at);
        }
        at += 4;
    }
}

/// RFC 1071 over `header`, its checksum field (bytes 10 and 11) counted as zero.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, w)| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Damage the frame once.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    let l3 = ether_type_at(frame).map(|at| at + 2);
    match rng.below(10) {
        0 | 1 => {
            let len = 14 + rng.below(frame.len() - 13);
            frame.truncate(len);
        }
        2 | 3 => {
            for _ in 0..1 + rng.below(3) {
                let at = if rng.chance(70) {
                    rng.below(frame.len().min(64))
                } else {
                    rng.below(frame.len())
                };
                frame[at] ^= 1 << rng.below(8);
            }
        }
        4 => {
            // A wrong IPv4 header length or version, its checksum fixed or not.
            if let Some(l3) = l3.filter(|l3| frame.len() >= l3 + 20) {
                frame[l3] = if rng.chance(50) {
                    (frame[l3] & 0xf0) | (rng.byte() & 0x0f)
                } else {
                    (rng.byte() & 0xf0) | (frame[l3] & 0x0f)
                };
                fix_ipv4_checksum(rng, frame, l3);
            }
        }
        5 => {
            // A wrong total length (IPv4) or payload length (IPv6).
            if let Some(l3) = l3.filter(|l3| frame.len() >= l3 + 20) {
                let at = if frame[l3] >> 4 == 6 { l3 + 4 } else { l3 + 2 };
                let len = match rng.below(3) {
                    0 => rng.word() as u16,
                    _ => {
                        let now = u16::from_be_bytes([frame[at], frame[at + 1]]);
                        now.wrapping_add(rng.below(9) as u16).wrapping_sub(4)
                    }
                };
                frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
                fix_ipv4_checksum(rng, frame, l3);
            }
        }
        6 => {
            // Another tag stacked in front of the others.
            let tpid = rng.pick(&[0x8100, 0x8100, 0x88a8]);
            let extra = tag(rng, tpid);
            frame.splice(12..12, extra);
        }
        7 => {
            let any = rng.word() as u16;
            let ether_type = rng.pick(&[0x8100, 0x0800, 0x86dd, 0x88a8, any]);
            let at = l3.map_or(12, |l3| l3 - 2);
            if frame.len() >= at + 2 {
                frame[at..at + 2].copy_from_slice(&u16::to_be_bytes(ether_type));
            }
        }
        8 => {
            // Bytes cut out of the middle.
            if frame.len() > 20 {
                let at = 12 + rng.below(frame.len() - 14);
                let len = 1 + rng.below((frame.len() - at).min(frame.len() - 14).min(8));
                frame.drain(at..at + len);
            }
        }
        _ => {
            let len = rng.below(24);
            let padding = rng.bytes(len);
            frame.extend_from_slice(&padding);
        }
    }
}

/// Recompute the IPv4 header checksum after a mutation, half the time: a bad checksum
/// would hide the other damage from every check after it.
fn fix_ipv4_checksum(rng: &mut Rng, frame: &mut [u8], l3: usize) {
    if frame[l3] >> 4 != 4 || !rng.chance(50) {
        return;
    }
    let len = (usize::from(frame[l3] & 0x0f) * 4).max(20);
    if let Some(header) = frame.get(l3..l3 + len) {
        let sum = ipv4_checksum(header);
        frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// One frame: built, then mutated or not; or random bytes.
pub fn frame(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(8) {
        let len = 14 + rng.below(120);
        return rng.bytes(len);
    }
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&dst_mac(rng));
    frame.extend_from_slice(&src_mac(rng));
    frame.extend_from_slice(&tags(rng));
    let (ether_type, rest) = network(rng);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(&rest);
    if rng.chance(15) {
        // Ethernet padding after the packet.
        let len = rng.below(20);
        frame.extend(std::iter::repeat_n(0, len));
    }
    if rng.chance(40) {
        for _ in 0..1 + rng.below(3) {
            mutate(rng, &mut frame);
        }
    }
    frame.truncate(max_frame(&frame));
    frame
}
