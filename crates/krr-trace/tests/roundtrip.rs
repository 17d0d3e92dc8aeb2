//! Writer → reader round trips over arbitrary event sequences, and random access.

use krr_trace::*;
use proptest::prelude::*;

fn arb_regs() -> impl Strategy<Value = Regs> {
    (prop::array::uniform16(any::<u64>()), any::<u64>(), any::<u64>()).prop_map(|(gpr, rip, rflags)| Regs {
        gpr,
        rip,
        rflags,
    })
}

fn arb_event() -> impl Strategy<Value = Event> {
    let vcpu = prop_oneof![0u32..4, 0u32..256];
    prop_oneof![
        (vcpu.clone(), any::<u64>()).prop_map(|(vcpu, pos)| Event::Start { vcpu, pos }),
        (vcpu.clone(), arb_regs()).prop_map(|(vcpu, regs)| Event::Syscall { vcpu, regs }),
        (vcpu.clone(), any::<u8>(), any::<u64>(), any::<u64>(), arb_regs()).prop_map(
            |(vcpu, vector, error_code, cr2, regs)| Event::Exception { vcpu, vector, error_code, cr2, regs }
        ),
        (vcpu.clone(), any::<u8>(), any::<u64>(), arb_regs())
            .prop_map(|(vcpu, vector, pos, regs)| Event::Interrupt { vcpu, vector, pos, regs }),
        (vcpu.clone(), 0usize..7, any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(vcpu, k, addr, data)| {
                let read = [
                    UserReadKind::CopyFromUser,
                    UserReadKind::GetUser,
                    UserReadKind::StrncpyFromUser,
                    UserReadKind::StrnlenUser,
                    UserReadKind::Futex,
                    UserReadKind::KmapAnon,
                    UserReadKind::IoUringSq,
                ][k];
                Event::UserRead { vcpu, read, addr, data }
            }
        ),
        (vcpu.clone(), any::<u64>(), any::<u64>()).prop_map(|(vcpu, addr, value)| Event::PteRead {
            vcpu,
            addr,
            value
        }),
        (vcpu.clone(), any::<u16>(), prop_oneof![Just(1u8), Just(2), Just(4)], any::<u32>())
            .prop_map(|(vcpu, port, size, value)| Event::PortRead { vcpu, port, size, value }),
        (vcpu.clone(), any::<u64>(), any::<u8>(), any::<u64>())
            .prop_map(|(vcpu, addr, size, value)| Event::MmioRead { vcpu, addr, size, value }),
        (vcpu.clone(), any::<u64>(), any::<Option<u32>>()).prop_map(|(vcpu, tsc, aux)| Event::Rdtsc {
            vcpu,
            tsc,
            aux
        }),
        (vcpu.clone(), any::<bool>(), any::<u64>(), any::<bool>()).prop_map(|(vcpu, s, value, ok)| {
            Event::Random {
                vcpu,
                source: if s { RandomSource::Rdseed } else { RandomSource::Rdrand },
                value,
                ok,
            }
        }),
        (vcpu.clone(), any::<u32>(), any::<u64>(), any::<bool>())
            .prop_map(|(vcpu, msr, value, fault)| { Event::Rdmsr { vcpu, msr, value, fault } }),
        (vcpu.clone(), any::<[u32; 6]>()).prop_map(|(vcpu, v)| Event::Cpuid {
            vcpu,
            leaf: v[0],
            subleaf: v[1],
            eax: v[2],
            ebx: v[3],
            ecx: v[4],
            edx: v[5]
        }),
        (vcpu.clone(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(vcpu, gpa, data)| Event::Dma { vcpu, gpa, data }),
        (vcpu.clone(), any::<u64>()).prop_map(|(vcpu, pos)| Event::LockHandoff { vcpu, pos }),
        (vcpu.clone(), any::<u64>()).prop_map(|(vcpu, pos)| Event::LockResync { vcpu, pos }),
        (vcpu.clone(), any::<u32>()).prop_map(|(vcpu, len)| Event::Console { vcpu, len }),
        (vcpu, 0usize..4).prop_map(|(vcpu, r)| Event::End {
            vcpu,
            reason: [EndReason::Poweroff, EndReason::Panic, EndReason::Interrupted, EndReason::Stopped][r]
        }),
    ]
}

fn write_trace(dir: &std::path::Path, events: &[Event], opts: WriterOptions) -> WriteSummary {
    let mut w = TraceWriter::create(dir, Header::default(), opts).unwrap();
    for e in events {
        w.append(e).unwrap();
    }
    w.finish(0, EndReason::Poweroff, 42).unwrap()
}

fn read_all(dir: &std::path::Path) -> Vec<Event> {
    let mut r = TraceReader::open(dir).unwrap();
    r.events().map(|e| e.unwrap().event).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_any_sequence(events in prop::collection::vec(arb_event(), 0..400),
                              target in 1usize..2048,
                              codec in prop_oneof![Just(Codec::None), Just(Codec::Lz4), Just(Codec::Zstd)]) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        let summary = write_trace(&dir, &events, WriterOptions { block_target: target, codec, queue_depth: 2 });
        let mut want = events.clone();
        want.push(Event::End { vcpu: 0, reason: EndReason::Poweroff });
        prop_assert_eq!(summary.events, want.len() as u64);
        let got = read_all(&dir);
        prop_assert_eq!(&got, &want);

        // Random access from any index gives the same suffix.
        let mut r = TraceReader::open(&dir).unwrap();
        for start in [0, want.len() as u64 / 3, want.len() as u64 - 1] {
            let tail: Vec<Event> = r.stream().events_from(start).map(|e| e.unwrap().event).collect();
            prop_assert_eq!(&tail[..], &want[start as usize..]);
        }
    }
}

#[test]
fn header_completion_is_written_last() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let header = Header {
        producer: "krr test".into(),
        vm: VmConfig {
            accel: "emu".into(),
            vcpus: 1,
            mem_bytes: 1 << 28,
            cmdline: "x".into(),
            cpu_vendor: "AuthenticAMD".into(),
        },
        ..Header::default()
    };
    let mut w = TraceWriter::create(&dir, header.clone(), WriterOptions::default()).unwrap();
    w.append(&Event::Start { vcpu: 0, pos: 5 }).unwrap();
    w.console(0, b"hello\n").unwrap();
    w.flush().unwrap();
    // Mid-recording: readable, not complete.
    let mut r = TraceReader::open(&dir).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.events().count(), 2);
    assert_eq!(r.console().unwrap(), b"hello\n");
    w.set_snapshot(SnapshotRef { file: SNAPSHOT_FILE.into(), bytes: 10, crc32: 1 }).unwrap();
    let s = w.finish(0, EndReason::Panic, 99).unwrap();
    assert_eq!(s.events, 3);
    assert_eq!(s.console_bytes, 6);
    let r = TraceReader::open(&dir).unwrap();
    let c = r.header().completion.clone().unwrap();
    assert_eq!(c.end_reason, EndReason::Panic);
    assert_eq!(c.events, 3);
    assert_eq!(c.event_bytes, std::fs::metadata(dir.join(EVENTS_FILE)).unwrap().len());
    assert_eq!(r.header().snapshot.as_ref().unwrap().bytes, 10);
    assert_eq!(r.header().vm, header.vm);
}

#[test]
fn refuses_a_directory_holding_a_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    write_trace(&dir, &[], WriterOptions::default());
    let e = TraceWriter::create(&dir, Header::default(), WriterOptions::default()).unwrap_err();
    assert!(matches!(e, TraceError::AlreadyExists { .. }), "{e}");
}

#[test]
fn oversized_events_are_refused_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w =
        TraceWriter::create(&tmp.path().join("t"), Header::default(), WriterOptions::default()).unwrap();
    let big = Event::Dma { vcpu: 0, gpa: 0, data: vec![0; limits::MAX_EVENT_DATA + 1] };
    assert!(matches!(w.append(&big), Err(TraceError::Limit { .. })));
    assert!(matches!(w.append(&Event::Console { vcpu: 300, len: 1 }), Err(TraceError::Limit { .. })));
    assert_eq!(w.events(), 0);
}

#[test]
fn dropped_writer_leaves_a_readable_incomplete_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    {
        let mut w = TraceWriter::create(&dir, Header::default(), WriterOptions::default()).unwrap();
        for i in 0..1000 {
            w.append(&Event::Rdtsc { vcpu: 0, tsc: i, aux: None }).unwrap();
        }
    }
    let mut r = TraceReader::open(&dir).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.events().filter(|e| e.is_ok()).count(), 1000);
}
