#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| samband::fuzz::trust_bundle(data));
