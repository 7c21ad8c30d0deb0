//! The chaos harness (`cargo xtask chaos`) counts what it claims to: run with one event of
//! each kind against a real xnosd, it sees every frame when nothing happens and the loss
//! of a port that was down, and its totals add up.

use std::process::Command;

use xnos_tests::require_root;

const RATE: u64 = 5000;
const OUTAGE_MS: u64 = 300;

fn kind<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["kinds"]
        .as_array()
        .and_then(|kinds| kinds.iter().find(|k| k["kind"] == name))
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

fn count(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

// What this shows: with nothing happening the harness counts no loss, a switch port held
// down for 300 ms without any event (an outage) shows as loss of about the frames that
// port carried meanwhile, a flapped port's traffic is seen resuming, and every frame sent
// is either received or counted lost, in one window or another.
#[test]
fn chaos_harness_sees_every_frame_and_an_outage() {
    require_root!();
    let out = Command::new(env!("CARGO_BIN_EXE_xnos-chaos"))
        .args(["--restarts", "1", "--kills", "1", "--upgrades", "1"])
        .args([
            "--faults",
            "1",
            "--flaps",
            "1",
            "--outages",
            "1",
            "--idle",
            "1",
        ])
        .args(["--rate", &RATE.to_string(), "--quiet-ms", "500"])
        .args(["--outage-ms", &OUTAGE_MS.to_string(), "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 1 is a missed target (a flap resuming late on a busy machine, say), not a failure of
    // the harness.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "harness failed ({}): {stderr}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stderr}"));
    for name in [
        "idle", "restart", "kill", "upgrade", "fault", "flap", "outage",
    ] {
        assert_eq!(count(&kind(&report, name)["events"]), 1, "{report:#}");
    }
    let missed = report["missed"].as_array().unwrap();
    assert_eq!(
        out.status.code() == Some(1),
        !missed.is_empty(),
        "{report:#}"
    );

    let idle = kind(&report, "idle");
    assert_eq!(
        count(&idle["lost"]),
        0,
        "loss with nothing happening: {report:#}"
    );
    assert_eq!(count(&idle["duplicates"]), 0, "{report:#}");
    assert_eq!(count(&idle["late"]), 0, "{report:#}");

    // The outage took down swp1: the flows from or to its host (flow i goes over ordered
    // host pair i % 12, and 34 of the 64 have h1 at one end).
    let flows = report["flows"].as_u64().unwrap();
    assert_eq!(flows, 64);
    let through = 34.0 / 64.0;
    let expected = (RATE as f64 * through * OUTAGE_MS as f64 / 1000.0) as u64;
    let outage = kind(&report, "outage");
    assert!(
        count(&outage["lost"]) >= expected * 8 / 10,
        "an outage of {OUTAGE_MS} ms lost fewer than the ~{expected} frames its port carried: {report:#}"
    );
    assert!(
        outage["resume-ms"]["max"].is_number()
            && kind(&report, "flap")["resume-ms"]["max"].is_number(),
        "traffic through the port never seen resuming: {report:#}"
    );

    let totals = &report["totals"];
    // Sent minus received, against the gaps the windows counted.
    assert_eq!(
        count(&totals["lost"]),
        count(&totals["lost-in-warmup"])
            + count(&totals["lost-in-events"])
            + count(&totals["lost-after-events"])
            + count(&totals["lost-at-end"]),
        "{report:#}"
    );
    assert_eq!(
        count(&totals["lost-at-end"]),
        0,
        "the last frames never came: {report:#}"
    );
    // The upgrade went to another build (xnosd-next, which cargo xtask test makes), not
    // to the same binary again.
    assert_eq!(report["upgrade-changes-binary"], true, "{report:#}");
}
