//! Damaged traces: every cut and every flipped bit yields the intact prefix and a typed error,
//! never a panic and never a wrong event.

use std::path::Path;

use krr_trace::*;

fn sample_events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| match i % 5 {
            0 => Event::Syscall { vcpu: 0, regs: Regs { gpr: [i; 16], rip: 0x40_1000 + i, rflags: 0x246 } },
            1 => Event::UserRead {
                vcpu: 0,
                read: UserReadKind::CopyFromUser,
                addr: 0x7ffd_0000 + i,
                data: vec![i as u8; 17],
            },
            _ => Event::Rdtsc { vcpu: 0, tsc: 1_000_000 + i * 997, aux: None },
        })
        .collect()
}

/// Writes a finished trace with small blocks; returns all its events (End included).
fn make_trace(dir: &Path) -> Vec<Event> {
    let evs = sample_events(300);
    let opts = WriterOptions { block_target: 128, ..WriterOptions::default() };
    let mut w = TraceWriter::create(dir, Header::default(), opts).unwrap();
    for e in &evs {
        w.append(e).unwrap();
    }
    w.finish(0, EndReason::Poweroff, 1).unwrap();
    let mut all = evs;
    all.push(Event::End { vcpu: 0, reason: EndReason::Poweroff });
    all
}

/// Reads what the reader gives for events bytes `bytes`: the intact events and the error, if any.
fn read_events(bytes: Vec<u8>) -> (Vec<Event>, Option<TraceError>) {
    let mut s = match EventStream::open(std::io::Cursor::new(bytes), Path::new("events")) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut evs = Vec::new();
    let mut err = None;
    for r in s.events_from(0) {
        match r {
            Ok(e) => evs.push(e.event),
            Err(e) => {
                assert!(err.is_none(), "more than one error");
                err = Some(e);
            }
        }
    }
    (evs, err)
}

#[test]
fn truncation_at_every_block_boundary_and_inside_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let all = make_trace(&dir);
    let bytes = std::fs::read(dir.join(EVENTS_FILE)).unwrap();
    let mut r = TraceReader::open(&dir).unwrap();
    let blocks: Vec<BlockInfo> = r.stream().blocks().to_vec();
    assert!(blocks.len() > 10, "want many blocks, got {}", blocks.len());

    let mut cuts: Vec<usize> = Vec::new();
    for b in &blocks {
        let off = b.offset as usize;
        cuts.extend([
            off,
            off + 1,
            off + 20,
            off + 36,
            off + 37,
            off + 36 + b.header.stored_len as usize - 1,
        ]);
    }
    cuts.extend([0, 5, 15, 16]);
    for cut in cuts {
        let (evs, err) = read_events(bytes[..cut].to_vec());
        // The recovered events are exactly the events of the blocks that fit completely.
        let intact: u64 = blocks
            .iter()
            .filter(|b| (b.offset as usize) + 36 + b.header.stored_len as usize <= cut)
            .map(|b| b.header.events as u64)
            .sum();
        assert_eq!(evs.len() as u64, intact, "cut at {cut}");
        assert_eq!(&evs[..], &all[..evs.len()], "cut at {cut}");
        let at_boundary = cut == 16 || blocks.iter().any(|b| b.offset as usize == cut);
        match err {
            None => assert!(at_boundary, "cut at {cut} inside a block went unnoticed"),
            Some(TraceError::Corrupt { events_recovered, .. }) => assert_eq!(events_recovered, intact),
            Some(TraceError::BadMagic { .. }) => assert!(cut < 8),
            Some(e) => assert!(cut < 16, "cut at {cut}: unexpected {e}"),
        }
    }
}

#[test]
fn every_bit_flip_is_detected_or_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let all = make_trace(&dir);
    let bytes = std::fs::read(dir.join(EVENTS_FILE)).unwrap();
    // Flip one bit in each of many positions spread over the file (every 7th byte, rotating bit).
    let mut detected = 0;
    for (n, pos) in (0..bytes.len()).step_by(7).enumerate() {
        let mut b = bytes.clone();
        b[pos] ^= 1 << (n % 8);
        let (evs, err) = read_events(b);
        // Whatever is returned as an event is a true prefix of the trace.
        assert_eq!(&evs[..], &all[..evs.len()], "flip at {pos}");
        if err.is_some() {
            detected += 1;
        } else {
            // Reserved bytes of the file header are the only place a flip may go unnoticed.
            assert!((12..16).contains(&pos), "flip at byte {pos} undetected");
        }
    }
    assert!(detected > 100);
}

#[test]
fn zeroed_or_random_header_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    make_trace(&dir);
    let hp = dir.join(HEADER_FILE);
    let len = std::fs::metadata(&hp).unwrap().len() as usize;
    std::fs::write(&hp, vec![0u8; len]).unwrap();
    let e = TraceReader::open(&dir).unwrap_err();
    assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));

    let mut seed = 0x1234_5678u32;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    for f in [HEADER_FILE, EVENTS_FILE] {
        std::fs::write(dir.join(f), &noise).unwrap();
    }
    let e = TraceReader::open(&dir).unwrap_err();
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn a_damaged_middle_block_stops_iteration_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let all = make_trace(&dir);
    let mut r = TraceReader::open(&dir).unwrap();
    let blocks = r.stream().blocks().to_vec();
    let victim = blocks[blocks.len() / 2];
    let mut bytes = std::fs::read(dir.join(EVENTS_FILE)).unwrap();
    bytes[victim.offset as usize + 40] ^= 0xff;
    std::fs::write(dir.join(EVENTS_FILE), &bytes).unwrap();
    let mut r = TraceReader::open(&dir).unwrap();
    let results: Vec<_> = r.events().collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok as u64, victim.header.first_event);
    match results.last().unwrap() {
        Err(TraceError::Corrupt { offset, events_recovered, reason, .. }) => {
            assert_eq!(*offset, victim.offset);
            assert_eq!(*events_recovered, victim.header.first_event);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Random access past the damage reports it instead of skipping it.
    let after = victim.header.first_event + 1;
    let first = r.stream().events_from(after).next().unwrap();
    assert!(first.is_err());
    assert_eq!(all.len(), 301);
}

#[test]
fn wrong_version_names_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    make_trace(&dir);
    let mut bytes = std::fs::read(dir.join(EVENTS_FILE)).unwrap();
    bytes[8] = 7;
    let e = EventStream::open(std::io::Cursor::new(bytes), Path::new("events")).unwrap_err().to_string();
    assert!(e.contains("version 7") && e.contains(&format!("version {FORMAT_VERSION}")), "{e}");
}
