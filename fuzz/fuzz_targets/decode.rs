#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sc_fuzz::decode(data));
