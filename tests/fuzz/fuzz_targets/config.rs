//! A config file's text: parsing and validation never panic, a refusal names its line
//! and key, and an accepted config saves and loads again unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xnos::config::Config;
use xnos_fuzz::{Host, check_config_error, check_saved};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse("fuzz.toml", text, Host) {
        Err(e) => check_config_error(&e, text),
        Ok(config) => {
            if let Err(e) = config.validate(&Host) {
                panic!("Config::parse accepted an invalid config: {e}");
            }
            check_saved(&config);
        }
    }
});
