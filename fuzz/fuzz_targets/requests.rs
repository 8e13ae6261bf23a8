//! Transmission requests: headers and write payloads through the request checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd::fuzzing::parse_requests(data));
