//! Switch configs (xnos.toml) for tests, built from the tables most tests share: access
//! and trunk ports, SVIs, routes, static FDB entries.
//!
//! The text is what a person would write: one table after another, each after a blank
//! line, keys in the order of the reference. Tests that edit a config as text (replace a
//! port, cut off the `[[fdb]]` tables) rely on that.

use std::fmt::{self, Display};

/// An xnos.toml under construction: each method adds one table, [`Config::set`] adds a key
/// to the last one. Read it as `&str` (it derefs to one) or print it.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Config(String);

/// A value of a TOML key, written as TOML.
pub trait Value {
    fn toml(&self) -> String;
}

impl Value for &str {
    fn toml(&self) -> String {
        format!("\"{self}\"")
    }
}

impl Value for String {
    fn toml(&self) -> String {
        self.as_str().toml()
    }
}

impl Value for u32 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl Value for u16 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl<T: Value> Value for &[T] {
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(Value::toml).collect();
        format!("[{}]", items.join(", "))
    }
}

impl<T: Value, const N: usize> Value for [T; N] {
    fn toml(&self) -> String {
        self.as_slice().toml()
    }
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ports `swp1`, `swp2`, ... in access mode, port `i + 1` in `vlans[i]`: the ports
    /// [`crate::Topology::new`] cables hosts to.
    pub fn access_ports(vlans: &[u16]) -> Self {
        vlans
            .iter()
            .enumerate()
            .fold(Self::new(), |config, (i, &vlan)| {
                config.access(&format!("swp{}", i + 1), vlan)
            })
    }

    /// A table of its own, `[name]` or `[[name]]`, with no keys yet.
    pub fn table(mut self, header: &str) -> Self {
        self.0 += &format!("\n{header}\n");
        self
    }

    /// `key = value` in the last table.
    pub fn set(mut self, key: &str, value: impl Value) -> Self {
        self.0 += &format!("{key} = {}\n", value.toml());
        self
    }

    /// `[switch]` with `key = value`.
    pub fn switch(self, key: &str, value: impl Value) -> Self {
        self.table("[switch]").set(key, value)
    }

    /// A `[[vlan]]` declared on its own (ports declare theirs by naming them).
    pub fn vlan(self, id: u16) -> Self {
        self.table("[[vlan]]").set("id", id)
    }

    /// An access port `name` in `vlan`.
    pub fn access(self, name: &str, vlan: u16) -> Self {
        self.table("[[port]]")
            .set("name", name)
            .set("mode", "access")
            .set("vlan", vlan)
    }

    /// A trunk port `name` carrying `vlans` tagged.
    pub fn trunk(self, name: &str, vlans: &[u16]) -> Self {
        self.table("[[port]]")
            .set("name", name)
            .set("mode", "trunk")
            .set("vlans", vlans)
    }

    /// An SVI: the L3 interface of `vlan` with `addresses`.
    pub fn svi(self, vlan: u16, addresses: &[&str]) -> Self {
        self.table("[[interface]]")
            .set("vlan", vlan)
            .set("addresses", addresses)
    }

    /// A config route to `prefix` through `nexthops`.
    pub fn route(self, prefix: &str, nexthops: &[&str]) -> Self {
        self.table("[[route]]")
            .set("prefix", prefix)
            .set("nexthops", nexthops)
    }

    /// A static FDB entry: `mac` in `vlan` on `port`.
    pub fn fdb(self, mac: &str, vlan: u16, port: &str) -> Self {
        self.table("[[fdb]]")
            .set("mac", mac)
            .set("vlan", vlan)
            .set("port", port)
    }
}

impl std::ops::Deref for Config {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for Config {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Config> for String {
    fn from(config: Config) -> Self {
        config.0
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    // What this shows: the builder writes the tables a person would, in the same layout.
    #[test]
    fn writes_tables_as_a_person_would() {
        let config = Config::access_ports(&[10, 20])
            .set("datapath", "tc")
            .switch("router-mac", "02:00:00:00:01:00")
            .trunk("swp3", &[10, 20])
            .set("native-vlan", 30u16)
            .svi(10, &["10.0.10.1/24", "fd00:10::1/64"])
            .route("10.99.0.0/16", &["10.0.20.2"])
            .fdb("02:00:00:00:00:55", 10, "swp1");
        assert_eq!(
            &*config,
            r#"
[[port]]
name = "swp1"
mode = "access"
vlan = 10

[[port]]
name = "swp2"
mode = "access"
vlan = 20
datapath = "tc"

[switch]
router-mac = "02:00:00:00:01:00"

[[port]]
name = "swp3"
mode = "trunk"
vlans = [10, 20]
native-vlan = 30

[[interface]]
vlan = 10
addresses = ["10.0.10.1/24", "fd00:10::1/64"]

[[route]]
prefix = "10.99.0.0/16"
nexthops = ["10.0.20.2"]

[[fdb]]
mac = "02:00:00:00:00:55"
vlan = 10
port = "swp1"
"#
        );
        let parsed = xnos::config::Config::parse("test.toml", &config, |_: &str| true).unwrap();
        assert_eq!(parsed.ports.len(), 3);
    }
}
