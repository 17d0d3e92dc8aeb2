//! Arbitrary bytes as the guest agent's ring (header and records): the parser returns an error
//! naming the offset, never panics or reads past the data.
#![no_main]

use krr_vmm::recorder::ring::{parse_records, RingHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RingHeader::parse(data, 1 << 20);
    let mut out = Vec::new();
    let _ = parse_records(data, &mut out);
    // Every parsed record came from inside the input.
    assert!(out.len() <= data.len() / 16);
});
