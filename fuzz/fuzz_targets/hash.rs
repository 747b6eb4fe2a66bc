#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flexnbd::fuzzing::hash(data));
