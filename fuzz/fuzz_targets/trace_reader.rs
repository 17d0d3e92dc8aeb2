//! Arbitrary bytes as a trace: the header parser, the `events` stream reader and the block
//! decoder must return typed errors, never panic, hang or allocate beyond the format's limits.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use krr_trace::{Decoder, EventStream, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let _ = Header::decode(rest, Path::new("header"));
        }
        1 => {
            // Prefix a valid stream header so the fuzzer spends its time on the blocks.
            let mut bytes = b"KRREVENT\x01\0\0\0\0\0\0\0".to_vec();
            bytes.extend_from_slice(rest);
            read_stream(bytes);
            read_stream(rest.to_vec());
        }
        _ => {
            let mut dec = Decoder::new(rest);
            while let Ok(Some(_)) = dec.next_event() {}
        }
    }
});

fn read_stream(bytes: Vec<u8>) {
    if let Ok(mut s) = EventStream::open(Cursor::new(bytes), Path::new("events")) {
        let n = s.event_count();
        for r in s.events_from(0) {
            if r.is_err() {
                break;
            }
        }
        let _ = s.events_from(n / 2).next();
    }
}
