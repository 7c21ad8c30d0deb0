//! The bpffs directory an instance pins its programs and maps under.
//!
//! Who unmounts what: a bpffs xnosd finds mounted is never unmounted by it. A bpffs it
//! mounted itself is unmounted when the [`PinDir`] is dropped (stop, or any failure while
//! starting): on the pin directory itself always, on `/sys/fs/bpf` only if nothing is left
//! in it but what the kernel put in a fresh one (another tool that pinned there meanwhile
//! keeps its pins, and the mount stays as the one systemd makes at boot would).

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// Where systemd mounts bpffs at boot, and where bpftool and ip look for pins.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// A pin directory on bpffs. Dropping it removes the directories and unmounts the bpffs
/// it made (see the module's comment).
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    /// Directories created here, outermost first.
    created: Vec<PathBuf>,
    /// The bpffs mounted here, if any.
    mounted: Option<PathBuf>,
    /// What a fresh bpffs holds (the kernel's own `maps.debug` and `progs.debug`, with
    /// CONFIG_BPF_PRELOAD): anything more at the end is someone else's.
    fresh: Vec<std::ffi::OsString>,
}

fn entries(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    // mode=0700: as systemd mounts it; pins are root's.
    mount(
        Some("bpf"),
        at,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| io::Error::other(format!("mount bpffs on {}: {e}", at.display())))
}

impl PinDir {
    /// Use `path` for pins, creating it and mounting bpffs where it is missing: on
    /// `/sys/fs/bpf` for a path below it (as systemd does at boot; a machine without it,
    /// or `ip netns exec`, which gives the command a fresh /sys without it), else on `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let path = std::path::absolute(path)?;
        // Cleans up what was made so far if a later step fails.
        let mut dir = Self {
            path: path.clone(),
            created: Vec::new(),
            mounted: None,
            fresh: Vec::new(),
        };
        if is_bpffs(&path) {
            return Ok(dir);
        }
        let sys = Path::new(SYS_FS_BPF);
        if path.starts_with(sys) && !is_bpffs(sys) {
            mount_bpffs(sys)?;
            dir.mounted = Some(sys.into());
            dir.fresh = entries(sys)?;
        }
        let missing: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        let on_bpffs = path.ancestors().find(|p| p.exists()).is_some_and(is_bpffs);
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", d.display())))?;
            dir.created.push(d);
        }
        if !on_bpffs && !is_bpffs(&path) {
            mount_bpffs(&path)?;
            dir.mounted = Some(path);
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.mounted.as_deref() == Some(self.path.as_path()) {
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        }
        for d in self.created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        if let Some(sys) = self.mounted.as_deref().filter(|m| *m != self.path)
            && entries(sys).is_ok_and(|e| e == self.fresh)
        {
            // Not detached: a process with its working directory there keeps it.
            let _ = umount2(sys, MntFlags::empty());
        }
    }
}

/// Remove the pins xnosd makes under `dir` (`maps/`, `progs/`), left there by an instance
/// that did not stop cleanly; nothing else in `dir` is touched.
pub fn remove_pins(dir: &Path) {
    for sub in ["maps", "progs"] {
        let sub = dir.join(sub);
        if !is_bpffs(&sub) {
            continue;
        }
        if let Ok(names) = entries(&sub) {
            for name in names {
                let _ = std::fs::remove_file(sub.join(name));
            }
        }
        let _ = std::fs::remove_dir(&sub);
    }
}
