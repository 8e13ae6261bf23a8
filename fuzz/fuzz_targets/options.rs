//! Option haggling: client flags and option frames through the negotiation state machine.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd::fuzzing::parse_options(data));
