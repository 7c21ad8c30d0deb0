//! xnos: an XDP switch. This library holds everything the daemon (`xnosd`) and the CLI
//! (`xnos`) share: the config format, the central state database, the datapath module
//! that owns the BPF maps, and the API spoken over the daemon's unix socket.

pub mod api;
pub mod bpffs;
pub mod claim;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod kernel;
pub mod mac;
pub mod metrics;
pub mod ready;
pub mod statedb;
pub mod supervisor;
pub mod switchdev;
pub mod testrun;
pub mod trace;

/// Where `xnosd` listens and `xnos` connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xnos/xnosd.sock";
/// Where `xnosd` pins its programs and maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xnos";
/// Default config file of `xnosd`.
pub const DEFAULT_CONFIG: &str = "/etc/xnos/xnos.toml";
