//! `cargo fuzz run --fuzz-dir tests/fuzz http1`: see `targets::http1`.
#![no_main]

#[path = "../../common/rules.rs"]
mod rules;
#[allow(dead_code)] // each target uses one of the checks
#[path = "../../common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::http1(data));
