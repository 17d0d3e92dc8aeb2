//! Golden tests of `krr dump` (text, JSON, stats) and its behaviour on damaged traces.
//! Regenerate the golden files with `KRR_UPDATE_GOLDEN=1 cargo test -p krr --test dump`.

use std::path::{Path, PathBuf};
use std::process::Command;

use krr_trace::*;

fn golden_trace(dir: &Path) {
    let header = Header {
        producer: "krr 0.0.0-golden".into(),
        vm: VmConfig {
            accel: "emu".into(),
            vcpus: 2,
            mem_bytes: 256 << 20,
            cmdline: "console=ttyS0 -- /bin/hello".into(),
            cpu_vendor: "GenuineIntel".into(),
        },
        kernel: KernelInfo {
            build_id: "0123456789abcdef".into(),
            content_hash: "sha256:feedface".into(),
            version: "6.1.192".into(),
        },
        cpuid: vec![CpuidTable {
            vcpu: 0,
            entries: vec![CpuidEntry { leaf: 0, eax: 0xd, ebx: 0x756e_6547, ..Default::default() }],
        }],
        snapshot: Some(SnapshotRef { file: "snapshot".into(), bytes: 4096, crc32: 0xdead_beef }),
        start_time_unix_ms: 1_795_000_000_000,
        completion: None,
    };
    let opts = WriterOptions { block_target: 64, ..WriterOptions::default() };
    let mut w = TraceWriter::create(dir, header, opts).unwrap();
    let regs = Regs {
        gpr: [0, 0, 3, 0, 0x7ffd_f000, 0, 0x4a_0000, 1, 0, 0, 0, 0x246, 0, 0, 0, 0],
        rip: 0x40_1a2b,
        rflags: 0x246,
    };
    let evs = [
        Event::Start { vcpu: 0, pos: 1000 },
        Event::Rdtsc { vcpu: 0, tsc: 123_456_789, aux: None },
        Event::Syscall {
            vcpu: 0,
            regs: Regs {
                gpr: [1, 0, 6, 0, 0x7ffd_f000, 0, 0x4a_0000, 1, 0, 0, 0, 0x246, 0, 0, 0, 0],
                ..regs
            },
        },
        Event::UserRead {
            vcpu: 0,
            read: UserReadKind::CopyFromUser,
            addr: 0x4a_0000,
            data: b"hello\n".to_vec(),
        },
    ];
    for e in &evs {
        w.append(e).unwrap();
    }
    w.console(0, b"hel").unwrap();
    w.console(0, b"lo\nwor").unwrap();
    let more = [
        Event::Exception { vcpu: 1, vector: 14, error_code: 6, cr2: 0x7ffd_e000, regs },
        Event::Interrupt { vcpu: 1, vector: 0xec, pos: 5000, regs },
        Event::PortRead { vcpu: 0, port: 0x3fd, size: 1, value: 0x60 },
        Event::MmioRead { vcpu: 0, addr: 0xfee0_0390, size: 4, value: 0x1234 },
        Event::Rdtsc { vcpu: 1, tsc: 99, aux: Some(1) },
        Event::Random { vcpu: 0, source: RandomSource::Rdrand, value: 0xabc, ok: true },
        Event::Rdmsr { vcpu: 0, msr: 0x10, value: 777, fault: false },
        Event::Cpuid { vcpu: 0, leaf: 1, subleaf: 0, eax: 0x806c1, ebx: 0, ecx: 0, edx: 0 },
        Event::PteRead { vcpu: 0, addr: 0x1000, value: 0x8000_0000_0012_3067 },
        Event::Dma { vcpu: 0, gpa: 0x10_0000, data: (0..40).collect() },
        Event::LockHandoff { vcpu: 1, pos: 5010 },
        Event::LockResync { vcpu: 0, pos: 1200 },
    ];
    for e in &more {
        w.append(e).unwrap();
    }
    w.console(1, b"ld\n[ end ]").unwrap();
    w.finish(0, EndReason::Poweroff, 1_795_000_060_000).unwrap();
}

fn krr(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_krr")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("KRR_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, want, "output differs from {}", path.display());
}

#[test]
fn golden_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    golden_trace(&dir);
    let d = dir.to_str().unwrap();
    for (name, args) in [
        ("dump.txt", vec!["dump", d]),
        ("dump.jsonl", vec!["dump", d, "--json"]),
        ("dump-range.txt", vec!["dump", d, "4-8"]),
        ("stats.txt", vec!["dump", d, "--stats"]),
        ("stats.json", vec!["dump", d, "--stats", "--json"]),
        ("header.txt", vec!["dump", d, "--header"]),
    ] {
        let (code, out, err) = krr(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
        check_golden(name, &out);
    }
    // Every JSON line parses.
    let (_, out, _) = krr(&["dump", d, "--json"]);
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn random_bytes_give_one_line_and_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    std::fs::create_dir(&dir).unwrap();
    let mut x = 0x9e37_79b9u32;
    for f in ["header", "events", "console", "snapshot"] {
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(f), noise).unwrap();
    }
    let (code, out, err) = krr(&["dump", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a krr trace"), "{err}");

    let (code, _, err) = krr(&["dump", tmp.path().join("missing").to_str().unwrap()]);
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn damaged_trace_prints_prefix_then_the_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    golden_trace(&dir);
    let ev = dir.join("events");
    let len = std::fs::metadata(&ev).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&ev).unwrap();
    f.set_len(len - 3).unwrap();
    let (code, out, err) = krr(&["dump", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("#0 cpu0 start pos=1000"), "{out}");
    assert!(!out.contains(" end reason="), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("truncated block payload") && err.contains("events before it are intact"), "{err}");
}
