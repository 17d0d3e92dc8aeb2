//! Arbitrary bytes as a VM snapshot file: the reader and the memory and CPU decoders return
//! errors, never panic or allocate past their limits.
#![no_main]

use std::path::Path;

use krr_vmm::snapshot::{decode_cpu, decode_memory, SnapshotFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Prefix a valid file header so the fuzzer spends its time on the sections.
    let mut bytes = b"KRRSNAP\0\x01\0\0\0\0\0\0\0".to_vec();
    bytes.extend_from_slice(data);
    for input in [&bytes[..], data] {
        if let Ok(f) = SnapshotFile::from_reader(input, Path::new("snapshot")) {
            for (tag, section) in &f.sections {
                if tag == b"MEM " {
                    let _ = decode_memory(section, 1 << 20, |_, _| true);
                } else {
                    let mut cpu = krr_emu::Cpu::new();
                    let _ = decode_cpu(&mut cpu, section);
                }
            }
        }
    }
});
