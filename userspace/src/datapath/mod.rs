//! The datapath: loads the XDP programs, pins them, and is the only code that writes the
//! BPF maps. [`module::run`] is the module that keeps the maps in line with StateDb.

mod attach;
pub mod module;
#[cfg(feature = "test-rig")]
pub mod rig;
pub mod route;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, MapType, PerCpuArray,
        PerCpuValues, RingBuf, xdp::XdpMapError,
    },
    programs::{ProgramError, SchedClassifier, Xdp},
    util::nr_cpus,
};
use xnos_common::{
    FdbEntry, FdbKey, L3Iface, L3Stats, NeighEntry, NeighKey, NexthopGroup, PortConf, PortStats,
    RouteEntry,
};

use crate::{bpffs::PinDir, config::DatapathChoice, kernel::xdp_features::xdp_features};

/// The compiled eBPF object (ebpf/xnos-ebpf), built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xnos"));

pub const INGRESS_PROGRAM: &str = "xnos_ingress";
/// aya-log's ring buffer in the object.
const LOG_MAP: &str = "AYA_LOGS";
pub const EGRESS_PROGRAM: &str = "xnos_egress";
pub const TRACE_PROGRAM: &str = "xnos_trace";
/// The same pipeline as `xnos_ingress`, as a TC classifier.
pub const TC_PROGRAM: &str = "xnos_tc_ingress";

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<EbpfError>),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    /// The kernel's E2BIG on an update: no room for a new key.
    #[error("map {name} is full")]
    MapFull { name: &'static str },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("devmap {name}")]
    DevMap {
        name: &'static str,
        #[source]
        source: Box<XdpMapError>,
    },
    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no datapath mode works on ifindex {ifindex}: {why}")]
    NoMode { ifindex: u32, why: String },
    #[error("attaching the datapath to ifindex {ifindex}")]
    Attach {
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("looking for the programs of an earlier xnosd")]
    Adopt(#[source] std::io::Error),
}

/// An error and its sources on one line, as `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| match &source {
        // Said as what it means, not as "Argument list too long".
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            DatapathError::MapFull { name }
        }
        _ => DatapathError::Map {
            name,
            source: Box::new(source),
        },
    }
}

fn devmap_err(name: &'static str) -> impl FnOnce(XdpMapError) -> DatapathError {
    move |source| DatapathError::DevMap {
        name,
        source: Box::new(source),
    }
}

fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> DatapathError {
    move |source| DatapathError::Program {
        name,
        source: Box::new(source),
    }
}

/// Load a program, again when the kernel answers EAGAIN: BPF_PROG_LOAD does under load
/// (several programs verified at once on a busy machine; libbpf retries it the same way,
/// aya does not).
fn load_retrying(mut load: impl FnMut() -> Result<(), ProgramError>) -> Result<(), ProgramError> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < ATTEMPTS =>
            {
                tracing::info!(attempt, "program load: EAGAIN, trying again");
                std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(attempt)));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// How the datapath is attached to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// XDP in the driver (fast; needed for XDP redirect on most NICs).
    Native,
    /// XDP in the kernel's generic receive path (any interface, slower).
    Generic,
    /// The same pipeline as a TC ingress program (tcx; any interface, skb based).
    Tc,
}

impl From<AttachMode> for crate::statedb::DatapathMode {
    fn from(mode: AttachMode) -> Self {
        match mode {
            AttachMode::Native => Self::XdpNative,
            AttachMode::Generic => Self::XdpGeneric,
            AttachMode::Tc => Self::Tc,
        }
    }
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "xdp-native",
            AttachMode::Generic => "xdp-generic",
            AttachMode::Tc => "tc",
        }
    }
}

/// Files this instance pinned; removed when dropped (clean shutdown or unwinding panic).
struct Pins {
    files: Vec<PathBuf>,
    dir: PinDir,
}

impl Drop for Pins {
    fn drop(&mut self) {
        for file in self.files.iter().rev() {
            let _ = std::fs::remove_file(file);
        }
        for sub in ["maps", "progs"] {
            let _ = std::fs::remove_dir(self.dir.path().join(sub));
        }
    }
}

/// What a start took over from an earlier xnosd ([`Datapath::start`]).
#[derive(Debug, Default)]
pub struct Adopted {
    /// Ports that carried its programs.
    pub ports: usize,
    /// Its maps, reused with their entries.
    pub maps: Vec<String>,
    /// Its maps whose layout this build changed, and what was copied into the new ones.
    pub migrated: Vec<String>,
}

/// Whether a map of an earlier load can stand for the object's definition `def`.
fn same_layout(def: &aya_obj::Map, info: &aya::maps::MapInfo) -> bool {
    let Ok(kind) = aya_obj::generated::bpf_map_type::try_from(def.map_type()) else {
        return false;
    };
    let Ok(kind) = MapType::try_from(kind) else {
        return false;
    };
    // A devmap's value is what the kernel supports (with a program fd), not the object's,
    // and the kernel makes it read-only to programs itself.
    let devmap = matches!(kind, MapType::DevMap | MapType::DevMapHash);
    let kernel_flags = if devmap {
        aya_obj::generated::BPF_F_RDONLY_PROG
    } else {
        0
    };
    info.map_type().is_ok_and(|t| t == kind)
        && info.key_size() == def.key_size()
        && (devmap || info.value_size() == def.value_size())
        && info.max_entries() == def.max_entries()
        && info.map_flags() & !kernel_flags == def.map_flags()
}

/// The L3 maps; written by `route::L3` only (and, in tests, through `rig`).
struct L3Maps {
    ifaces: HashMap<MapData, u32, L3Iface>,
    vlan_l3: Array<MapData, L3Iface>,
    routes4: LpmTrie<MapData, [u8; 4], RouteEntry>,
    routes6: LpmTrie<MapData, [u8; 16], RouteEntry>,
    nhgs: HashMap<MapData, u32, NexthopGroup>,
    neighs: HashMap<MapData, NeighKey, NeighEntry>,
}

pub struct Datapath {
    ebpf: Ebpf,
    /// Whether the programs log (`load_with`).
    log: bool,
    l3: L3Maps,
    ports: HashMap<MapData, u32, PortConf>,
    stats: PerCpuArray<MapData, PortStats>,
    fdb: HashMap<MapData, FdbKey, FdbEntry>,
    tx_ports: DevMapHash<MapData>,
    flood_ports: DevMapHash<MapData>,
    learn_events: Option<RingBuf<MapData>>,
    /// The ports carrying this instance's ingress program, and how.
    links: BTreeMap<u32, AttachMode>,
    /// For TC floods: ifindex per stats slot, and one past the highest slot in use.
    port_slots: Array<MapData, u32>,
    port_slots_end: Array<MapData, u32>,
    slots_used: std::collections::BTreeSet<u32>,
    /// Why each attached port uses its mode.
    reasons: BTreeMap<u32, String>,
    /// The ports this instance claimed (xnosd claims; the datapath alone, in tests, not).
    claims: Option<crate::claim::Claims>,
    /// Ports another instance holds: the claim is tried again now and then.
    refused: std::collections::BTreeSet<u32>,
    // Declared last: pins are removed after the links are gone.
    pins: Option<Pins>,
}

impl Datapath {
    /// Load the programs and create the maps (through the verifier); optionally pin them.
    pub fn load(pin_dir: Option<PinDir>) -> Result<Self, DatapathError> {
        Self::load_with(pin_dir, false)
    }

    /// `load`, and with `log` the datapath logs its exceptional events (a full FDB) for
    /// [`Datapath::take_log`]. Without it the logging code is not even there: its level
    /// is a read-only global the verifier knows, so it removes the code as dead.
    pub fn load_with(pin_dir: Option<PinDir>, log: bool) -> Result<Self, DatapathError> {
        Self::load_reusing(EBPF_OBJECT, pin_dir, log, &[])
    }

    /// Load xnosd's datapath, taking over from an earlier xnosd: where its programs are
    /// still on ports named in `ports` that this instance may claim (it stopped, crashed or
    /// is being upgraded; another instance's ports, even stopped, are not named),
    /// their maps are reused as they are, so that what it learned and programmed stays and
    /// the counters go on; the ports keep forwarding with the old programs until
    /// [`Datapath::attach`] swaps in the new ones, port by port, atomically. A map whose
    /// layout this build changed is made new, and its entries copied where key and value
    /// are still the same size.
    pub fn start(
        pin_dir: PinDir,
        log: bool,
        mut claims: crate::claim::Claims,
        ports: &std::collections::BTreeSet<String>,
    ) -> Result<(Self, Adopted), DatapathError> {
        let mut adopted = Adopted::default();
        let map_ids_of = |f: &attach::Found| f.info.map_ids().ok().flatten().unwrap_or_default();
        // The maps of every earlier program on the config's ports (the XDP and the TC
        // ingress programs use different sets). A port it had that the config no longer
        // names is in its port map: the first reconcile takes the program off it.
        let mut map_ids = std::collections::BTreeSet::new();
        for ifindex in attach::ifindexes().map_err(DatapathError::Adopt)? {
            // A link that went meanwhile has nothing to take over.
            let Ok(found) = attach::find(ifindex, &[INGRESS_PROGRAM, TC_PROGRAM]) else {
                continue;
            };
            if found.is_empty() {
                continue;
            }
            let name = nix::net::if_::if_indextoname(ifindex)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|_| format!("ifindex {ifindex}"));
            if !ports.contains(&name) {
                continue;
            }
            // A port another running instance holds is that instance's.
            if claims.claim(ifindex).is_err() {
                continue;
            }
            adopted.ports += 1;
            for f in &found {
                map_ids.extend(map_ids_of(f));
            }
        }
        let object = aya_obj::Object::parse(EBPF_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(EbpfError::ParseError(e))))?;
        let maps_dir = pin_dir.path().join("maps");
        if !maps_dir.exists() {
            std::fs::create_dir(&maps_dir).map_err(|source| DatapathError::Pin {
                path: maps_dir.clone(),
                source,
            })?;
        }
        let mut reuse = Vec::new();
        let mut changed = Vec::new();
        for id in map_ids {
            let Ok(map) = MapData::from_id(id) else {
                continue;
            };
            let Ok(info) = map.info() else { continue };
            let Some(name) = info.name_as_str().map(str::to_string) else {
                continue;
            };
            // The log ring and the data sections (`.rodata`) belong to one load.
            if name == LOG_MAP || name.contains('.') {
                continue;
            }
            let Some(def) = object.maps.get(&name) else {
                continue;
            };
            if !same_layout(def, &info) {
                changed.push((name, map, info));
                continue;
            }
            // aya reuses a map it finds pinned where it would pin it.
            let path = maps_dir.join(&name);
            let _ = std::fs::remove_file(&path);
            map.pin(&path).map_err(|e| DatapathError::Pin {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            reuse.push((name, path));
        }
        let mut dp = match Self::load_reusing(EBPF_OBJECT, Some(pin_dir), log, &reuse) {
            Ok(dp) => dp,
            Err(e) => {
                // The pins made for the load are not the `Pins` of a load: they go here.
                for (_, path) in &reuse {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };
        adopted.maps = reuse.into_iter().map(|(name, _)| name).collect();
        for (name, old, info) in changed {
            let new = MapData::from_pin(maps_dir.join(&name)).map_err(map_err("changed map"))?;
            let new_info = new.info().map_err(map_err("changed map"))?;
            // Only maps whose entries are plain data are copied: a devmap's values hold
            // program IDs where an update wants fds (reconcile fills it anew from the ports),
            // a per-CPU value is one per CPU, a ring buffer has no entries.
            let plain = matches!(
                info.map_type(),
                Ok(MapType::Hash | MapType::LruHash | MapType::Array | MapType::LpmTrie)
            );
            let copied = if plain
                && new_info.key_size() == info.key_size()
                && new_info.value_size() == info.value_size()
            {
                attach::copy_entries(
                    old.fd().as_fd(),
                    new.fd().as_fd(),
                    info.key_size() as usize,
                    info.value_size() as usize,
                )
                .unwrap_or_else(|e| {
                    tracing::warn!(map = %name, error = %e, "copying a changed map failed");
                    0
                })
            } else {
                0
            };
            adopted.migrated.push(format!(
                "{name} (key {}/value {}/{} entries -> key {}/value {}/{} entries: {copied} entries copied)",
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                new_info.key_size(),
                new_info.value_size(),
                new_info.max_entries()
            ));
        }
        if adopted.ports > 0 {
            dp.repoint_floods()?;
            // A port map that was reused while a devmap or slot map was made new: the
            // egress entries of its ports are written again (reconcile writes only ports
            // whose config changed).
            for (ifindex, conf) in dp.ports()? {
                dp.set_port(ifindex, conf)?;
            }
        }
        dp.set_claims(claims);
        Ok((dp, adopted))
    }

    /// The flood devmap's entries run the egress program of the load that wrote them: a
    /// reused map gets this load's.
    fn repoint_floods(&mut self) -> Result<(), DatapathError> {
        let egress = Self::program(&self.ebpf, EGRESS_PROGRAM)
            .fd()
            .map_err(prog_err(EGRESS_PROGRAM))?;
        let ports: Vec<u32> = self.flood_ports.keys().filter_map(Result::ok).collect();
        for ifindex in ports {
            self.flood_ports
                .insert(ifindex, ifindex, Some(egress), 0)
                .map_err(devmap_err("FLOOD_PORTS"))?;
        }
        Ok(())
    }

    /// `load_with` from `object` (xnosd's is always `EBPF_OBJECT`), with the maps named in
    /// `reuse` taken from where they are pinned.
    fn load_reusing(
        object: &[u8],
        pin_dir: Option<PinDir>,
        log: bool,
        reuse: &[(String, PathBuf)],
    ) -> Result<Self, DatapathError> {
        let level = if log { aya_log::Level::Warn as u8 } else { 0 };
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &level, true);
        for (name, path) in reuse {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        for name in [INGRESS_PROGRAM, EGRESS_PROGRAM, TRACE_PROGRAM] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(ProgramError::NotLoaded)
                .and_then(|p| p.try_into())
                .map_err(prog_err(name))?;
            load_retrying(|| program.load()).map_err(prog_err(name))?;
        }
        let tc: &mut SchedClassifier = ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(ProgramError::NotLoaded)
            .and_then(|p| p.try_into())
            .map_err(prog_err(TC_PROGRAM))?;
        load_retrying(|| tc.load()).map_err(prog_err(TC_PROGRAM))?;
        let pins = match pin_dir {
            Some(dir) => Some(Self::pin(&mut ebpf, dir)?),
            None => None,
        };
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| map_err(name)(MapError::InvalidName { name: name.into() }))
        };
        let ports = take("PORTS")?;
        let stats = take("PORT_STATS")?;
        let fdb = take("FDB")?;
        let tx_ports = take("TX_PORTS")?;
        let flood_ports = take("FLOOD_PORTS")?;
        let learn_events = take("LEARN_EVENTS")?;
        let port_slots = take("PORT_SLOTS")?;
        let port_slots_end = take("PORT_SLOTS_END")?;
        let l3 = L3Maps {
            ifaces: HashMap::try_from(take("L3_IFACES")?).map_err(map_err("L3_IFACES"))?,
            vlan_l3: Array::try_from(take("VLAN_L3")?).map_err(map_err("VLAN_L3"))?,
            routes4: LpmTrie::try_from(take("ROUTES4")?).map_err(map_err("ROUTES4"))?,
            routes6: LpmTrie::try_from(take("ROUTES6")?).map_err(map_err("ROUTES6"))?,
            nhgs: HashMap::try_from(take("NHGS")?).map_err(map_err("NHGS"))?,
            neighs: HashMap::try_from(take("NEIGHS")?).map_err(map_err("NEIGHS"))?,
        };
        Ok(Self {
            log,
            l3,
            ports: HashMap::try_from(ports).map_err(map_err("PORTS"))?,
            stats: PerCpuArray::try_from(stats).map_err(map_err("PORT_STATS"))?,
            fdb: HashMap::try_from(fdb).map_err(map_err("FDB"))?,
            tx_ports: DevMapHash::try_from(tx_ports).map_err(map_err("TX_PORTS"))?,
            flood_ports: DevMapHash::try_from(flood_ports).map_err(map_err("FLOOD_PORTS"))?,
            learn_events: Some(RingBuf::try_from(learn_events).map_err(map_err("LEARN_EVENTS"))?),
            links: BTreeMap::new(),
            port_slots: Array::try_from(port_slots).map_err(map_err("PORT_SLOTS"))?,
            port_slots_end: Array::try_from(port_slots_end).map_err(map_err("PORT_SLOTS_END"))?,
            reasons: BTreeMap::new(),
            claims: None,
            refused: Default::default(),
            slots_used: Default::default(),
            ebpf,
            pins,
        })
    }

    /// Pins every program under `<dir>/progs/` and every map under `<dir>/maps/`, so that
    /// `bpftool` and other tools can find them.
    fn pin(ebpf: &mut Ebpf, dir: PinDir) -> Result<Pins, DatapathError> {
        let mut pins = Pins {
            files: Vec::new(),
            dir,
        };
        let root = pins.dir.path().to_path_buf();
        let pin_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| DatapathError::Pin { path, source }
        };
        for sub in ["maps", "progs"] {
            let path = root.join(sub);
            if !path.exists() {
                std::fs::create_dir(&path).map_err(pin_err(&path))?;
            }
        }
        for (name, map) in ebpf.maps() {
            // The log ring is xnosd's own, and data sections (`.rodata`: the log level) are
            // not maps anyone reads.
            if name == LOG_MAP || name.starts_with('.') {
                continue;
            }
            let path = root.join("maps").join(name);
            // A leftover from an instance that died without cleaning up is replaced.
            let _ = std::fs::remove_file(&path);
            map.pin(&path)
                .map_err(|e| pin_err(&path)(std::io::Error::other(e)))?;
            pins.files.push(path);
        }
        // The programs xnosd loads, by name: a program added to the object is pinned only
        // once xnosd uses it.
        for name in [INGRESS_PROGRAM, EGRESS_PROGRAM, TRACE_PROGRAM, TC_PROGRAM] {
            let program = ebpf
                .program_mut(name)
                .ok_or(ProgramError::NotLoaded)
                .map_err(prog_err(name))?;
            let path = root.join("progs").join(name);
            let _ = std::fs::remove_file(&path);
            program
                .pin(&path)
                .map_err(|e| pin_err(&path)(std::io::Error::other(e)))?;
            pins.files.push(path);
        }
        Ok(pins)
    }

    /// Claim every port before attaching to it from now on (see claim.rs).
    pub fn set_claims(&mut self, claims: crate::claim::Claims) {
        self.claims = Some(claims);
    }

    /// Claim port `ifindex` for this instance; fails naming the instance that holds it.
    pub fn claim(&mut self, ifindex: u32) -> Result<(), crate::claim::ClaimError> {
        let Some(claims) = &mut self.claims else {
            return Ok(());
        };
        let result = claims.claim(ifindex);
        if matches!(result, Err(crate::claim::ClaimError::Taken { .. })) {
            self.refused.insert(ifindex);
        } else {
            self.refused.remove(&ifindex);
        }
        result
    }

    /// Release the claims of the ports `keep` does not name.
    pub fn release_claims(&mut self, keep: impl Fn(u32) -> bool) {
        if let Some(claims) = &mut self.claims {
            claims.release_others(keep);
        }
    }

    /// Forget which ports were refused, returning them: a reconcile claims every port anew.
    pub fn forget_refused(&mut self) -> std::collections::BTreeSet<u32> {
        std::mem::take(&mut self.refused)
    }

    /// Whether a port is refused because another instance holds it.
    pub fn claims_refused(&self) -> bool {
        !self.refused.is_empty()
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir.path())
    }

    fn program<'a>(ebpf: &'a Ebpf, name: &'static str) -> &'a Xdp {
        match ebpf.program(name) {
            Some(aya::programs::Program::Xdp(p)) => p,
            _ => unreachable!("{name} is loaded as XDP in Datapath::load"),
        }
    }

    /// The loaded trace program, for BPF_PROG_TEST_RUN.
    pub fn trace_fd(&self) -> Result<BorrowedFd<'_>, DatapathError> {
        let fd = Self::program(&self.ebpf, TRACE_PROGRAM)
            .fd()
            .map_err(prog_err(TRACE_PROGRAM))?;
        Ok(fd.as_fd())
    }

    /// The loaded ingress program, for BPF_PROG_TEST_RUN.
    pub fn ingress_fd(&self) -> Result<BorrowedFd<'_>, DatapathError> {
        let fd = Self::program(&self.ebpf, INGRESS_PROGRAM)
            .fd()
            .map_err(prog_err(INGRESS_PROGRAM))?;
        Ok(fd.as_fd())
    }

    /// The loaded TC ingress program, for BPF_PROG_TEST_RUN.
    pub fn tc_fd(&self) -> Result<BorrowedFd<'_>, DatapathError> {
        let fd = match self.ebpf.program(TC_PROGRAM) {
            Some(aya::programs::Program::SchedClassifier(p)) => p.fd(),
            _ => unreachable!("{TC_PROGRAM} is loaded as a classifier in Datapath::load"),
        }
        .map_err(prog_err(TC_PROGRAM))?;
        Ok(fd.as_fd())
    }

    /// The datapath's log records (`load_with(.., true)`), written to `logger` by
    /// [`aya_log::EbpfLogger::flush`] when its fd is readable; taken once.
    pub fn take_log<T: log::Log>(
        &mut self,
        logger: T,
    ) -> Option<Result<aya_log::EbpfLogger<T>, aya_log::Error>> {
        if !std::mem::take(&mut self.log) {
            return None;
        }
        Some(aya_log::EbpfLogger::init_with_logger(
            &mut self.ebpf,
            logger,
        ))
    }

    /// The ring buffer of learn events; the module that drains it takes it once.
    pub fn take_learn_events(&mut self) -> Option<RingBuf<MapData>> {
        self.learn_events.take()
    }

    /// Give the ring buffer back (when the module that drained it stops).
    pub fn put_learn_events(&mut self, ring: RingBuf<MapData>) {
        self.learn_events = Some(ring);
    }

    pub fn ports(&self) -> Result<BTreeMap<u32, PortConf>, DatapathError> {
        self.ports
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("PORTS"))
    }

    /// Add or update a port: its config, its egress slots for unicast and flooding.
    pub fn set_port(&mut self, ifindex: u32, conf: PortConf) -> Result<(), DatapathError> {
        if self.tx_ports.get(ifindex, 0).is_err() {
            self.tx_ports
                .insert(ifindex, ifindex, None, 0)
                .map_err(devmap_err("TX_PORTS"))?;
        }
        if self.flood_ports.get(ifindex, 0).is_err() {
            let egress = Self::program(&self.ebpf, EGRESS_PROGRAM)
                .fd()
                .map_err(prog_err(EGRESS_PROGRAM))?;
            self.flood_ports
                .insert(ifindex, ifindex, Some(egress), 0)
                .map_err(devmap_err("FLOOD_PORTS"))?;
        }
        self.ports
            .insert(ifindex, conf, 0)
            .map_err(map_err("PORTS"))?;
        self.set_slot(conf.stats_slot, ifindex)
    }

    /// Record which port uses a stats slot (TC floods walk the slots).
    fn set_slot(&mut self, slot: u32, ifindex: u32) -> Result<(), DatapathError> {
        self.port_slots
            .set(slot, ifindex, 0)
            .map_err(map_err("PORT_SLOTS"))?;
        if ifindex == 0 {
            self.slots_used.remove(&slot);
        } else {
            self.slots_used.insert(slot);
        }
        let end = self.slots_used.last().map_or(0, |slot| slot + 1);
        self.port_slots_end
            .set(0, end, 0)
            .map_err(map_err("PORT_SLOTS_END"))
    }

    /// Remove a port from every map and detach XDP from it.
    pub fn remove_port(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        // The interface may be gone already, and its XDP link with it.
        if let Err(e) = self.detach(ifindex) {
            tracing::info!(ifindex, error = %e, "detach failed (interface gone?)");
        }
        let _ = self.flood_ports.remove(ifindex);
        let _ = self.tx_ports.remove(ifindex);
        let slot = self.ports.get(&ifindex, 0).ok().map(|conf| conf.stats_slot);
        match self.ports.remove(&ifindex) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("PORTS")(e)),
        }
        match slot {
            Some(slot) => self.set_slot(slot, 0),
            None => Ok(()),
        }
    }

    pub fn attached(&self, ifindex: u32) -> Option<AttachMode> {
        self.links.get(&ifindex).copied()
    }

    /// This load's ingress program for a mode.
    fn ingress_for(&self, mode: AttachMode) -> Result<BorrowedFd<'_>, DatapathError> {
        match mode {
            AttachMode::Tc => self.tc_fd(),
            _ => self.ingress_fd(),
        }
    }

    /// Attach the ingress pipeline to a port as `choice` asks. A program of xnos already on
    /// the port in a mode `choice` accepts (an earlier xnosd's, or this one's) is replaced
    /// in place, atomically: the port never goes without one. Otherwise `auto` takes the
    /// best the port supports: native XDP, else generic XDP, else TC (each fallback logged
    /// with the reason), and what was there goes once the new one is on. Returns the mode
    /// and why.
    pub fn attach(
        &mut self,
        ifindex: u32,
        choice: DatapathChoice,
    ) -> Result<(AttachMode, String), DatapathError> {
        let wanted = match choice {
            DatapathChoice::XdpNative => Some(AttachMode::Native),
            DatapathChoice::XdpGeneric => Some(AttachMode::Generic),
            DatapathChoice::Tc => Some(AttachMode::Tc),
            DatapathChoice::Auto => None,
            DatapathChoice::Switchdev => {
                return Err(DatapathError::NoMode {
                    ifindex,
                    why: "a switchdev port is forwarded by the kernel bridge".into(),
                });
            }
        };
        if let Some(mode) = self.attached(ifindex)
            && wanted.is_none_or(|w| w == mode)
        {
            // An auto port keeps what it got; a configured one must have exactly that.
            let reason = self.reasons.get(&ifindex).cloned().unwrap_or_default();
            return Ok((mode, reason));
        }
        let attach_err = |source| DatapathError::Attach { ifindex, source };
        let found = attach::find(ifindex, &[INGRESS_PROGRAM, TC_PROGRAM]).map_err(attach_err)?;
        let configured = || format!("configured: datapath = \"{}\"", choice.name());
        // What the driver says it supports saves a failed attach and explains more.
        let mut why = Vec::new();
        let mut modes = vec![AttachMode::Native, AttachMode::Generic, AttachMode::Tc];
        if wanted.is_none() {
            match xdp_features(ifindex) {
                Ok(f) if !f.native() => {
                    why.push(format!(
                        "xdp-native unavailable: the driver has no native XDP (xdp-features: {f})"
                    ));
                    modes.remove(0);
                }
                Ok(f) if !f.redirect() => {
                    why.push(format!(
                        "xdp-native unavailable: the driver's XDP cannot redirect (xdp-features: {f})"
                    ));
                    modes.remove(0);
                }
                Ok(_) => {}
                Err(e) => tracing::info!(ifindex, error = %e, "xdp-features unknown"),
            }
        }
        if let Some(old) = found.iter().find(|f| wanted.is_none_or(|w| w == f.mode)) {
            let mode = old.mode;
            let new = self.ingress_for(mode)?;
            match mode {
                AttachMode::Tc => attach::tcx_attach(ifindex, new, Some(old.fd.as_fd())),
                _ => attach::xdp_set(ifindex, Some(new), Some(old.fd.as_fd()), mode),
            }
            .map_err(attach_err)?;
            for other in found.iter().filter(|f| f.info.id() != old.info.id()) {
                Self::remove_found(ifindex, other);
            }
            let reason = match (wanted, mode) {
                (Some(_), _) => configured(),
                (None, AttachMode::Native) => "auto: the driver supports native XDP".to_string(),
                (None, _) if !why.is_empty() => format!("auto: {}", why.join("; ")),
                (None, _) => format!("auto: kept {}, as attached before", mode.name()),
            };
            self.links.insert(ifindex, mode);
            self.reasons.insert(ifindex, reason.clone());
            return Ok((mode, reason));
        }
        if let Some(mode) = wanted {
            modes = vec![mode];
        }
        let mut attached = None;
        for mode in modes {
            // Native and generic XDP cannot be on a port at once: a program in the other
            // XDP mode goes first (put back if the new one does not attach).
            let blocking: Vec<&attach::Found> = found
                .iter()
                .filter(|f| mode != AttachMode::Tc && f.mode != AttachMode::Tc && f.mode != mode)
                .collect();
            for f in &blocking {
                Self::remove_found(ifindex, f);
            }
            match self.attach_mode(ifindex, mode) {
                Ok(()) => {
                    attached = Some(mode);
                    break;
                }
                Err(e) => {
                    for f in &blocking {
                        if let Err(e) = attach::xdp_set(ifindex, Some(f.fd.as_fd()), None, f.mode) {
                            tracing::error!(ifindex, mode = f.mode.name(), error = %e, "putting back the program that was on the port failed: it has none now");
                        }
                    }
                    let e = error_chain(&e);
                    tracing::info!(ifindex, mode = mode.name(), error = %e, "datapath mode unavailable");
                    why.push(format!("{} unavailable: {e}", mode.name()));
                }
            }
        }
        let Some(mode) = attached else {
            return Err(match wanted {
                Some(_) => attach_err(std::io::Error::other(why.join("; "))),
                None => DatapathError::NoMode {
                    ifindex,
                    why: why.join("; "),
                },
            });
        };
        // What was on the port in another mode goes now that the new program runs.
        for f in found.iter().filter(|f| f.mode != mode) {
            Self::remove_found(ifindex, f);
        }
        let reason = match (wanted, mode) {
            (Some(_), _) => configured(),
            (None, AttachMode::Native) => "auto: the driver supports native XDP".to_string(),
            (None, _) => format!("auto: {}", why.join("; ")),
        };
        self.links.insert(ifindex, mode);
        self.reasons.insert(ifindex, reason.clone());
        Ok((mode, reason))
    }

    /// Put this load's ingress program on a port's hook for `mode`, where the hook is free.
    fn attach_mode(&mut self, ifindex: u32, mode: AttachMode) -> Result<(), DatapathError> {
        let attach_err = |source| DatapathError::Attach { ifindex, source };
        let program = self.ingress_for(mode)?;
        match mode {
            AttachMode::Tc => attach::tcx_attach(ifindex, program, None),
            _ => attach::xdp_set(ifindex, Some(program), None, mode),
        }
        .map_err(attach_err)
    }

    /// Take a program of xnos off a port (logged when that fails: the port may be gone).
    fn remove_found(ifindex: u32, found: &attach::Found) {
        let result = match found.mode {
            AttachMode::Tc => attach::tcx_detach(ifindex, found.fd.as_fd()),
            mode => attach::xdp_set(ifindex, None, Some(found.fd.as_fd()), mode),
        };
        if let Err(e) = result {
            tracing::info!(ifindex, mode = found.mode.name(), error = %e, "removing a program of xnos failed");
        }
    }

    /// Take every program of xnos off a port: this load's, and an earlier xnosd's.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        self.reasons.remove(&ifindex);
        self.links.remove(&ifindex);
        let found = attach::find(ifindex, &[INGRESS_PROGRAM, TC_PROGRAM])
            .map_err(|source| DatapathError::Attach { ifindex, source })?;
        for f in &found {
            Self::remove_found(ifindex, f);
        }
        Ok(())
    }

    /// Take the datapath off every port it is on (the explicit teardown). Without it, a
    /// dropped `Datapath` leaves the programs attached and forwarding, for the next xnosd
    /// to take over; the pins go either way.
    pub fn remove(mut self) {
        let attached: Vec<u32> = self.links.keys().copied().collect();
        for ifindex in attached {
            if let Err(e) = self.detach(ifindex) {
                tracing::warn!(ifindex, error = %e, "detach failed");
            }
        }
    }

    pub fn fdb_entries(&self) -> Result<Vec<(FdbKey, FdbEntry)>, DatapathError> {
        let mut entries = Vec::new();
        for item in self.fdb.iter() {
            match item {
                Ok(entry) => entries.push(entry),
                // An entry deleted by aging or a move while we iterate.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("FDB")(e)),
            }
        }
        Ok(entries)
    }

    pub fn fdb_get(&self, key: &FdbKey) -> Option<FdbEntry> {
        self.fdb.get(key, 0).ok()
    }

    pub fn fdb_insert(&mut self, key: FdbKey, entry: FdbEntry) -> Result<(), DatapathError> {
        self.fdb.insert(key, entry, 0).map_err(map_err("FDB"))
    }

    pub fn fdb_remove(&mut self, key: &FdbKey) -> Result<(), DatapathError> {
        match self.fdb.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("FDB")(e)),
        }
    }

    /// A port's counters summed over all CPUs.
    pub fn port_stats(&self, slot: u32) -> Result<PortStats, DatapathError> {
        let per_cpu = self.stats.get(&slot, 0).map_err(map_err("PORT_STATS"))?;
        Ok(sum_stats(per_cpu.iter()))
    }

    /// Zero a counter slot before a new port uses it.
    pub fn reset_stats(&mut self, slot: u32) -> Result<(), DatapathError> {
        let cpus = nr_cpus().map_err(|(_, e)| map_err("PORT_STATS")(MapError::IoError(e)))?;
        let zero = PerCpuValues::try_from(vec![PortStats::default(); cpus])
            .map_err(|e| map_err("PORT_STATS")(MapError::IoError(e)))?;
        self.stats.set(slot, zero, 0).map_err(map_err("PORT_STATS"))
    }
}

/// Take every program of xnos off the ports of this network namespace that `claims` can
/// claim (no running instance holds them): the explicit teardown. Returns each port's name
/// and what was removed from it.
pub fn remove_everywhere(
    claims: &mut crate::claim::Claims,
) -> Result<Vec<(String, String)>, DatapathError> {
    let mut removed = Vec::new();
    for ifindex in attach::ifindexes().map_err(DatapathError::Adopt)? {
        let Ok(found) = attach::find(ifindex, &[INGRESS_PROGRAM, TC_PROGRAM]) else {
            continue;
        };
        if found.is_empty() {
            continue;
        }
        let name = nix::net::if_::if_indextoname(ifindex)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("ifindex {ifindex}"));
        if let Err(e) = claims.claim(ifindex) {
            tracing::warn!(port = %name, error = %e, "left alone");
            continue;
        }
        for f in &found {
            Datapath::remove_found(ifindex, f);
        }
        let modes: Vec<&str> = found.iter().map(|f| f.mode.name()).collect();
        removed.push((name, modes.join(", ")));
    }
    Ok(removed)
}

/// Switch-wide L3 counters summed over all CPUs.
pub fn sum_l3_stats<'a>(per_cpu: impl Iterator<Item = &'a L3Stats>) -> L3Stats {
    let mut total = L3Stats::default();
    for s in per_cpu {
        total.routed_v4 += s.routed_v4;
        total.routed_v6 += s.routed_v6;
        total.punts_rate_limited += s.punts_rate_limited;
        for (t, p) in total.punts.iter_mut().zip(s.punts) {
            *t += p;
        }
    }
    total
}

pub fn sum_stats<'a>(per_cpu: impl Iterator<Item = &'a PortStats>) -> PortStats {
    let mut total = PortStats::default();
    for s in per_cpu {
        total.rx_packets += s.rx_packets;
        total.rx_bytes += s.rx_bytes;
        total.tx_packets += s.tx_packets;
        total.tx_bytes += s.tx_bytes;
        total.flooded += s.flooded;
        total.to_kernel += s.to_kernel;
        total.punted += s.punted;
        total.learned += s.learned;
        total.learn_refused += s.learn_refused;
        total.learn_events_lost += s.learn_events_lost;
        for (t, d) in total.drops.iter_mut().zip(s.drops) {
            *t += d;
        }
    }
    total
}

/// Read-only access to the counters of a running instance through its pinned maps.
pub struct StatsReader {
    stats: PerCpuArray<MapData, PortStats>,
    l3: PerCpuArray<MapData, L3Stats>,
    vlan_flooded: PerCpuArray<MapData, u64>,
}

impl StatsReader {
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join("maps").join(name)).map_err(map_err(name))
        };
        let stats = PerCpuArray::try_from(Map::PerCpuArray(open("PORT_STATS")?))
            .map_err(map_err("PORT_STATS"))?;
        let l3 = PerCpuArray::try_from(Map::PerCpuArray(open("L3_STATS")?))
            .map_err(map_err("L3_STATS"))?;
        let vlan_flooded = PerCpuArray::try_from(Map::PerCpuArray(open("VLAN_FLOODED")?))
            .map_err(map_err("VLAN_FLOODED"))?;
        Ok(Self {
            stats,
            l3,
            vlan_flooded,
        })
    }

    /// Frames flooded in VLAN `vid`, summed over all CPUs.
    pub fn vlan_flooded(&self, vid: u16) -> Result<u64, DatapathError> {
        let per_cpu = self
            .vlan_flooded
            .get(&u32::from(vid), 0)
            .map_err(map_err("VLAN_FLOODED"))?;
        Ok(per_cpu.iter().sum())
    }

    pub fn l3(&self) -> Result<L3Stats, DatapathError> {
        let per_cpu = self.l3.get(&0, 0).map_err(map_err("L3_STATS"))?;
        Ok(sum_l3_stats(per_cpu.iter()))
    }

    pub fn get(&self, slot: u32) -> Result<PortStats, DatapathError> {
        let per_cpu = self.stats.get(&slot, 0).map_err(map_err("PORT_STATS"))?;
        Ok(sum_stats(per_cpu.iter()))
    }
}
