//! The body of `POST /v1/transact` as raw bytes: whatever parses as a transaction is
//! applied to a switch holding the example config, under `check_transact`'s rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xnos::api::Transaction;
use xnos_fuzz::{base_db, check_transact};

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = serde_json::from_slice::<Transaction>(data) else {
        return;
    };
    let _ = check_transact(&base_db(), &tx.ops);
});
