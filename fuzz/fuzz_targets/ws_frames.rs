//! cargo-fuzz target: `confab::fuzzing::ws_frames` (README "Reliability").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    confab::fuzzing::ws_frames(data);
});
