//! The packet fuzzer (xnos_tests::packets) for a short run: random and mutated frames
//! through the real XDP and TC programs, every result checked. `cargo xtask fuzz` makes
//! the long run; XNOS_FUZZ_SEED and XNOS_FUZZ_FRAMES choose a run here.

use xnos_tests::{packets, require_root};

/// Frames of a run in the test suite: about 14 s on the 2-core development VM (twice that
/// while another run shares it).
const FRAMES: u64 = 60_000;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text}: {e}")))
}

// What this shows: no frame of the corpus, and none of a fresh random run, makes either
// program break an invariant (out of the ingress port, into a VLAN the port does not carry
// or wrongly tagged, routed with a wrong TTL or checksum, malformed and forwarded, an
// unexpected verdict).
#[test]
fn fuzzed_frames_keep_the_invariants() {
    require_root!();
    // A new seed each run, printed: a failure names it and the frame that broke.
    let seed = env_u64("XNOS_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    });
    let frames = env_u64("XNOS_FUZZ_FRAMES").unwrap_or(FRAMES);
    let report =
        packets::run(seed, frames, &packets::corpus_dir()).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(report.frames, frames);
    // Every outcome comes up in both programs: a datapath that dropped (or flooded)
    // everything would pass each frame's own checks but not this.
    for (program, counts) in ["XDP", "TC"].iter().zip(&report.outcomes) {
        for (outcome, count) in packets::Outcome::ALL.iter().zip(counts) {
            assert!(*count > 0, "{program}: no frame {}", outcome.name());
        }
    }
    let [xdp, tc] = report.outcomes.map(|o| o.iter().sum::<u64>());
    let all = frames + report.corpus_frames;
    assert_eq!(xdp, all, "XDP judged every frame");
    assert_eq!(
        tc + report.refused,
        all,
        "TC judged every frame it could run"
    );
}
