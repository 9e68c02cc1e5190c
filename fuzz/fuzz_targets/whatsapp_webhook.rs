//! cargo-fuzz target: `confab::fuzzing::whatsapp_webhook` (README "Reliability").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    confab::fuzzing::whatsapp_webhook(data);
});
