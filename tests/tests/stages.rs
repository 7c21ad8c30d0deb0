//! The benchmark's stages build of the datapath (xnos_tests::bench): each program that stops
//! the pipeline after a stage passes the verifier and stops exactly there, the whole
//! pipeline in that build still forwards, and xnosd's object has none of it. The bench
//! measures these programs and asserts no timing; this keeps what it measures right.

use xnos::{
    datapath::EBPF_OBJECT,
    testrun::{self, XDP_REDIRECT},
};
use xnos_tests::{
    bench::{BenchSwitch, PATHS, ROUTER, STAGES_OBJECT, Traffic, WHOLE_PIPELINE, mac},
    require_root,
};

const STAGE_PREFIX: &[u8] = b"xnos_stage_";

fn names(object: &[u8]) -> bool {
    object
        .windows(STAGE_PREFIX.len())
        .any(|w| w == STAGE_PREFIX)
}

#[test]
fn only_the_stages_build_has_stage_programs() {
    assert!(
        names(STAGES_OBJECT),
        "the stages build has no stage program"
    );
    assert!(!names(EBPF_OBJECT), "xnosd's object has stage programs");
}

#[test]
fn each_stage_program_stops_after_its_stage() {
    require_root!();
    let switch = BenchSwitch::with_stages().expect("the stages build loads");
    let swp1 = switch.rig.ports["swp1"];
    let run = |program: &'static str, frame: &[u8]| {
        let fd = switch.rig.dp.xdp_fd(program).expect("loaded");
        switch
            .rig
            .ns
            .enter(|| testrun::run_xdp(fd, swp1, frame, 1))
            .expect("entered the namespace")
            .expect("BPF_PROG_TEST_RUN")
    };
    for path in &PATHS {
        let frame = &switch.path_frames(path)[0];
        for stage in path.stages {
            assert_eq!(
                testrun::action_name(run(stage.program, frame).action),
                testrun::action_name(stage.expected_action()),
                "{} on {}",
                stage.program,
                path.name
            );
        }
        // Another path's stage is not on this one: its program runs the whole pipeline.
        for other in PATHS.iter().flat_map(|p| p.stages) {
            if path.stages.iter().all(|s| s.program != other.program) {
                assert_eq!(
                    testrun::action_name(run(other.program, frame).action),
                    "redirect",
                    "{} on {}",
                    other.program,
                    path.name
                );
            }
        }
        // The whole pipeline forwards the path's frame as xnosd's does.
        let whole = run(WHOLE_PIPELINE, frame);
        assert_eq!(whole.action, XDP_REDIRECT, "{}", path.name);
        match path.traffic {
            Traffic::L2Unicast => assert_eq!(&whole.frame, frame, "{}", path.name),
            Traffic::Routed4 | Traffic::Routed6 => {
                assert_eq!(whole.frame[..6], mac(0xd, 0), "{}: next hop", path.name);
                assert_eq!(whole.frame[6..12], ROUTER, "{}: router MAC", path.name);
            }
        }
    }
}
