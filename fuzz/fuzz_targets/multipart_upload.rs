//! cargo-fuzz target: `confab::fuzzing::multipart_upload` (README "Reliability").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    confab::fuzzing::multipart_upload(data);
});
