//! cargo-fuzz target: `confab::fuzzing::twilio_webhook` (README "Reliability").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    confab::fuzzing::twilio_webhook(data);
});
