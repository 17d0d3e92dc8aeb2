//! Write a small synthetic trace (the shape of a short fork/exec workload) to a directory, for
//! demos and for trying `krr dump`:  cargo run -p krr-trace --example sample_trace -- DIR
//! It is synthetic: no guest ran. `krr record` writes real traces.

use krr_trace::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: sample_trace DIR")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let header = Header {
        producer: format!("krr-trace sample_trace {}", env!("CARGO_PKG_VERSION")),
        vm: VmConfig {
            accel: "synthetic".into(),
            vcpus: 1,
            mem_bytes: 256 << 20,
            cmdline: "-- /bin/hello".into(),
            cpu_vendor: "GenuineIntel".into(),
        },
        start_time_unix_ms: now,
        ..Header::default()
    };
    let mut w = TraceWriter::create(std::path::Path::new(&dir), header, WriterOptions::default())?;
    let mut regs = Regs { gpr: [0; 16], rip: 0x40_1000, rflags: 0x246 };
    let mut tsc = 5_000_000_000u64;
    let mut pos = 10_000u64;
    w.append(&Event::Start { vcpu: 0, pos })?;
    for (nr, arg) in [(59u64, 0x4a_2000u64), (12, 0), (9, 0), (1, 1), (231, 0)] {
        tsc += 12_345;
        pos += 4_321;
        w.append(&Event::Rdtsc { vcpu: 0, tsc, aux: None })?;
        regs.gpr[0] = nr;
        regs.gpr[7] = arg;
        regs.rip += 0x40;
        w.append(&Event::Syscall { vcpu: 0, regs })?;
        if nr == 59 {
            w.append(&Event::UserRead {
                vcpu: 0,
                read: UserReadKind::StrncpyFromUser,
                addr: arg,
                data: b"/bin/hello\0".to_vec(),
            })?;
        }
        if nr == 1 {
            w.append(&Event::UserRead {
                vcpu: 0,
                read: UserReadKind::CopyFromUser,
                addr: 0x4a_3000,
                data: b"hello\n".to_vec(),
            })?;
            w.console(0, b"hello\n")?;
        }
        w.append(&Event::Interrupt { vcpu: 0, vector: 0xec, pos: pos + 77, regs })?;
    }
    let s = w.finish(0, EndReason::Poweroff, now + 1)?;
    println!("{dir}: {} events, {} bytes", s.events, s.event_bytes);
    Ok(())
}
