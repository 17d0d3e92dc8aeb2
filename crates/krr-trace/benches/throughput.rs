//! Trace write/read throughput and encoded size on a realistic event mix.
//!
//! Run: `cargo bench -p krr-trace --bench throughput [-- EVENTS]`. Prints numbers; asserts nothing.
//! "Raw" bytes are [`Event::raw_size`]: what a naive fixed-width log (8-byte fields) would hold.

use std::time::Instant;

use krr_trace::*;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// About 90 % RDTSC, the rest syscalls, timer interrupts and small user-memory reads, on 2 vCPUs,
/// with values shaped like a real guest's (TSC advancing by a few microseconds at 2.5 GHz,
/// user pointers in a few regions, kernel pointers for interrupted kernel code).
fn mix(n: usize) -> Vec<Event> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut tsc = [10_000_000_000u64; 2];
    let mut pos = [1_000_000u64; 2];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let vcpu = rng.below(2) as u32;
        let v = vcpu as usize;
        tsc[v] += 500 + rng.below(25_000);
        pos[v] += 10 + rng.below(5_000);
        let r = rng.below(100);
        let ev = if r < 90 {
            Event::Rdtsc { vcpu, tsc: tsc[v], aux: None }
        } else if r < 95 {
            let mut gpr = [0u64; 16];
            gpr[0] = [0, 1, 3, 9, 11, 57, 59, 61, 202, 232][rng.below(10) as usize];
            gpr[7] = rng.below(16);
            gpr[6] = 0x7ffd_c000_0000 + rng.below(1 << 16) * 8;
            gpr[2] = rng.below(4096);
            gpr[4] = 0x7ffd_c010_0000 - rng.below(64) * 16;
            gpr[1] = 0x40_1000 + rng.below(1 << 16);
            gpr[11] = 0x246;
            Event::Syscall { vcpu, regs: Regs { gpr, rip: gpr[1], rflags: 0x246 } }
        } else if r < 97 {
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = if rng.below(2) == 0 {
                    rng.below(1 << 12)
                } else {
                    0xffff_8880_0100_0000 + rng.below(1 << 20) * 8
                };
            }
            let rip = 0xffff_ffff_8100_0000 + rng.below(1 << 22);
            Event::Interrupt { vcpu, vector: 0xec, pos: pos[v], regs: Regs { gpr, rip, rflags: 0x246 } }
        } else {
            let len = 8 + rng.below(56) as usize;
            let data: Vec<u8> =
                (0..len).map(|_| b"/usr/bin/lib.so.6\0abcdefghijklmnop"[rng.below(34) as usize]).collect();
            Event::UserRead {
                vcpu,
                read: UserReadKind::CopyFromUser,
                addr: 0x7ffd_c000_0000 + rng.below(1 << 16),
                data,
            }
        };
        out.push(ev);
    }
    out
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2_000_000);
    let events = mix(n);
    let raw: usize = events.iter().map(Event::raw_size).sum();
    println!(
        "krr-trace throughput: {n} events, {:.1} MB raw ({:.1} raw bytes/event)",
        raw as f64 / 1e6,
        raw as f64 / n as f64
    );
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>12} {:>12} {:>12}",
        "codec", "write MB/s", "write Mev/s", "bytes/event", "read MB/s", "read Mev/s", "file MB"
    );
    for codec in [Codec::Zstd, Codec::Lz4, Codec::None] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("trace");
        let opts = WriterOptions { codec, ..WriterOptions::default() };
        let t = Instant::now();
        let mut w = TraceWriter::create(&dir, Header::default(), opts).expect("create");
        for e in &events {
            w.append(e).expect("append");
        }
        let summary = w.finish(0, EndReason::Poweroff, 0).expect("finish");
        let wt = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut r = TraceReader::open(&dir).expect("open");
        let mut count = 0u64;
        for e in r.events() {
            std::hint::black_box(e.expect("event"));
            count += 1;
        }
        let rt = t.elapsed().as_secs_f64();
        assert_eq!(count, n as u64 + 1);
        println!(
            "{:<6} {:>12.0} {:>12.2} {:>14.2} {:>12.0} {:>12.2} {:>12.2}",
            codec.name(),
            raw as f64 / wt / 1e6,
            n as f64 / wt / 1e6,
            summary.event_bytes as f64 / n as f64,
            raw as f64 / rt / 1e6,
            n as f64 / rt / 1e6,
            summary.event_bytes as f64 / 1e6,
        );
    }
}
