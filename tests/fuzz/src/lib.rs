//! What the fuzz targets share: the switch they run against and the invariants every
//! config change must keep, whichever way it arrives (file, API, CLI).

use std::sync::{Arc, OnceLock};

use xnos::{
    config::{Config, ConfigError, LinkFacts, Links},
    statedb::{Commit, Op, StateDb, TxError},
};

/// The kernel interfaces the targets validate against: every name exists (so that
/// validation goes past the port check) except those starting with "gone"; "lo" is the
/// loopback.
#[derive(Clone, Copy, Debug)]
pub struct Host;

impl Links for Host {
    fn facts(&self, name: &str) -> Option<LinkFacts> {
        (!name.starts_with("gone")).then_some(LinkFacts {
            loopback: name == "lo",
        })
    }
}

/// The switch every transaction starts from: the complete example of
/// docs/configuration.md (also the first seed of the config target).
pub fn base_config() -> &'static Config {
    static BASE: OnceLock<Config> = OnceLock::new();
    BASE.get_or_init(|| {
        let text = include_str!("../seeds/config/example.toml");
        Config::parse("example.toml", text, Host).expect("the example config is valid")
    })
}

/// A StateDb holding the base config.
pub fn base_db() -> Arc<StateDb> {
    StateDb::new(base_config().clone(), Host)
}

/// A config file error must say where and what: a line in the file, a key, a message.
pub fn check_config_error(e: &ConfigError, text: &str) {
    assert!(
        !e.message.trim().is_empty(),
        "error without a message: {e:?}"
    );
    assert!(!e.key.trim().is_empty(), "error without a key: {e:?}");
    let lines = text.lines().count().max(1);
    assert!(
        (1..=lines + 1).contains(&e.line),
        "error on line {} of a {lines}-line file: {e:?}",
        e.line
    );
}

/// A config that xnosd accepted is one `xnos config save` writes: the file it writes must
/// load again to the same config.
pub fn check_saved(config: &Config) {
    let saved = config.to_toml();
    let again = Config::parse("saved.toml", &saved, Host)
        .unwrap_or_else(|e| panic!("the saved config fails to load: {e}\n{saved}"));
    assert_eq!(
        &again, config,
        "the saved config loads differently:\n{saved}"
    );
}

/// Apply `ops` to `db` and check what every transaction must keep: a refusal says why
/// and changes nothing; an accepted one leaves a valid config that saves and loads.
pub fn check_transact(db: &StateDb, ops: &[Op]) -> Result<Arc<Commit>, TxError> {
    let before = db.read(|s| (s.generation, s.config.clone()));
    let result = db.transact(ops);
    let after = db.read(|s| (s.generation, s.config.clone()));
    match &result {
        Err(e) => {
            assert!(
                !e.to_string().trim().is_empty(),
                "refusal without a message"
            );
            if let TxError::Invalid(field) = e {
                assert!(
                    !field.table.is_empty() && !field.field.is_empty(),
                    "refusal that names no table or field: {field:?}"
                );
            }
            assert_eq!(
                after, before,
                "a refused transaction changed the database: {e}"
            );
        }
        Ok(commit) => {
            after
                .1
                .validate(&Host)
                .unwrap_or_else(|e| panic!("a committed config is invalid: {e}"));
            let expected = before.0 + u64::from(!commit.changes.is_empty());
            assert_eq!(after.0, expected, "generation after {commit:?}");
            assert_eq!(commit.generation, after.0);
            check_saved(&after.1);
        }
    }
    result
}
