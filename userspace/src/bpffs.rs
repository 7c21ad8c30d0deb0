//! The bpffs directory an instance pins its programs and maps under.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// A pin directory on bpffs. If we had to mount bpffs there, dropping this unmounts it.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    mounted_by_us: bool,
    created_by_us: bool,
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

impl PinDir {
    /// Use `path` for pins, creating it and mounting bpffs on it when it is not on bpffs
    /// already (as under `ip netns exec`, which gives the command a fresh /sys).
    pub fn open(path: &Path) -> io::Result<Self> {
        if is_bpffs(path) {
            return Ok(Self {
                path: path.into(),
                mounted_by_us: false,
                created_by_us: false,
            });
        }
        let created_by_us = !path.exists();
        if created_by_us && path.parent().is_some_and(is_bpffs) {
            std::fs::create_dir(path)?;
            return Ok(Self {
                path: path.into(),
                mounted_by_us: false,
                created_by_us,
            });
        }
        std::fs::create_dir_all(path)?;
        mount(
            Some("bpf"),
            path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("mount bpffs on {}: {e}", path.display())))?;
        Ok(Self {
            path: path.into(),
            mounted_by_us: true,
            created_by_us,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.mounted_by_us {
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        }
        if self.created_by_us {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}
