//! Port claims: one xnosd drives a port. The datapath claims each port before it attaches
//! to it, by an flock'd file named by the network namespace and the port's ifindex that
//! holds the owner's API socket and pid. The kernel drops the lock when its holder dies,
//! so a crashed instance leaves no claim behind, and a restarted one takes its ports back
//! at once. The kernel module asks [`held_elsewhere`] before it removes a netdev of xnos
//! (an SVI) that its config lacks: it may be another instance's.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// Where xnosd keeps its claim files.
pub const CLAIM_DIR: &str = "/run/xnos/ports";

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "claimed by another xnosd ({owner}): stop that instance or remove the port from one of \
         the two configs"
    )]
    Taken { owner: String },
    #[error("{call} {}: {source}", path.display())]
    Io {
        call: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn claim_path(dir: &Path, netns: u64, ifindex: u32) -> PathBuf {
    dir.join(format!("netns-{netns}-ifindex-{ifindex}"))
}

/// Whether another live process (another xnosd) holds the claim of port `ifindex` of this
/// network namespace in `dir`.
pub fn held_elsewhere(dir: &Path, ifindex: u32) -> bool {
    let Ok(netns) = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()) else {
        return false;
    };
    let Ok(mut file) = File::open(claim_path(dir, netns, ifindex)) else {
        return false;
    };
    let mut owner = String::new();
    let _ = file.read_to_string(&mut owner);
    // This process's own claim conflicts with a second lock too: it is not another's.
    if owner.ends_with(&format!(", pid {}", std::process::id())) {
        return false;
    }
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

/// The ports this instance holds, and who it says it is to the others.
pub struct Claims {
    dir: PathBuf,
    /// The inode of this process's network namespace: ifindexes are per namespace.
    netns: u64,
    owner: String,
    held: BTreeMap<u32, Flock<File>>,
}

impl Claims {
    /// Claims in `dir` for the instance whose API socket is `socket`.
    pub fn new(dir: &Path, socket: &Path) -> Result<Self, ClaimError> {
        let io = |call, path: &Path| {
            let path = path.to_path_buf();
            move |source| ClaimError::Io { call, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let ns = Path::new("/proc/self/ns/net");
        let netns = std::fs::metadata(ns).map_err(io("stat", ns))?.ino();
        Ok(Self {
            dir: dir.to_path_buf(),
            netns,
            owner: format!("socket {}, pid {}", socket.display(), std::process::id()),
            held: BTreeMap::new(),
        })
    }

    fn path(&self, ifindex: u32) -> PathBuf {
        claim_path(&self.dir, self.netns, ifindex)
    }

    /// Claim port `ifindex`, unless this instance holds it already; fails naming the
    /// instance that holds it.
    pub fn claim(&mut self, ifindex: u32) -> Result<(), ClaimError> {
        if self.held.contains_key(&ifindex) {
            return Ok(());
        }
        let path = self.path(ifindex);
        let io = |call| {
            let path = path.clone();
            move |source| ClaimError::Io { call, path, source }
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("opening"))?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut owner = String::new();
                    let _ = file.read_to_string(&mut owner);
                    let owner = match owner.trim() {
                        "" => "which has not said who it is yet".to_string(),
                        owner => owner.to_string(),
                    };
                    return Err(ClaimError::Taken { owner });
                }
                Err((_, errno)) => return Err(io("flock")(errno.into())),
            };
            // A holder releasing the claim removes the file: a lock on the removed file
            // (opened just before) would be a claim no one else sees. Try again.
            let locked = lock.metadata().map_err(io("fstat"))?.ino();
            if std::fs::metadata(&path).is_ok_and(|m| m.ino() == locked) {
                lock.set_len(0).map_err(io("truncating"))?;
                lock.write_all(self.owner.as_bytes())
                    .map_err(io("writing"))?;
                self.held.insert(ifindex, lock);
                return Ok(());
            }
        }
    }

    /// Release every claim but those of `keep`.
    pub fn release_others(&mut self, keep: impl Fn(u32) -> bool) {
        let gone: Vec<u32> = self.held.keys().copied().filter(|i| !keep(*i)).collect();
        for ifindex in gone {
            // Removed while still locked, so that no one locks the file being removed.
            let _ = std::fs::remove_file(self.path(ifindex));
            self.held.remove(&ifindex);
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.release_others(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What this shows: a port claimed by one holder is refused to another, naming the
    // first; released (or dropped, as when the process dies), it is free at once.
    #[test]
    fn a_claim_is_refused_naming_its_holder_and_freed_when_released() {
        let dir = std::env::temp_dir().join(format!("xnos-claims-{}", std::process::id()));
        let mut a = Claims::new(&dir, Path::new("/run/a.sock")).unwrap();
        let mut b = Claims::new(&dir, Path::new("/run/b.sock")).unwrap();
        a.claim(7).unwrap();
        a.claim(7).unwrap();
        let refused = b.claim(7).unwrap_err().to_string();
        assert_eq!(
            refused,
            format!(
                "claimed by another xnosd (socket /run/a.sock, pid {}): stop that instance or \
                 remove the port from one of the two configs",
                std::process::id()
            )
        );
        b.claim(8).unwrap();
        a.release_others(|_| false);
        assert!(!held_elsewhere(&dir, 7));
        b.claim(7).unwrap();
        drop(b);
        a.claim(7).unwrap();
        a.claim(8).unwrap();
        drop(a);
        let _ = std::fs::remove_dir(&dir);
    }
}
