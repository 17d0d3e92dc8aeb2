//! `krr doctor`: what this host offers krr, measured in a second or two.

use std::process::ExitCode;
use std::time::Instant;

/// Probe the host: /dev/kvm, whether KVM runs guest ring 0 natively, whether a ring-3 SYSCALL
/// reaches ring 0, whether KVM_SET_CPUID2 is honoured, the guest PMU, and krr-emu's speed; then
/// say which backend `--accel auto` picks.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Testing aid for the nested harness: hold a never-running KVM VM until killed, so KVM
    /// does not make L1 patch its own code each time a VM comes and goes (docs/nested-kvm.md).
    #[arg(long, hide = true)]
    pub hold_kvm: bool,
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    if args.hold_kvm {
        let _hold = krr_vmm::kvm::ApicKeyHold::new()?;
        eprintln!("krr doctor: holding a KVM VM until killed");
        loop {
            std::thread::park();
        }
    }
    let t = Instant::now();
    let kvm_path = std::env::var("KRR_KVM_DEVICE").unwrap_or_else(|_| "/dev/kvm".into());
    println!("{:<33}{}", format!("{kvm_path} present:"), yes(std::path::Path::new(&kvm_path).exists()));
    let probe = krr_vmm::probe::probe_kvm();
    match &probe {
        Ok(r) => {
            println!(
                "guest ring 3 loop:               {:.2} ns per iteration (dec; jnz)",
                r.ring3_ns_per_iter
            );
            println!(
                "guest ring 0 loop:               {:.2} ns per iteration -> {}",
                r.ring0_ns_per_iter,
                if r.ring0_native() { "native" } else { "emulated by KVM's instruction emulator" }
            );
            println!("ring-3 SYSCALL enters ring 0:    {}", yes(r.syscall_enters_ring0));
            println!("KVM_SET_CPUID2 honoured:         {}", yes(r.set_cpuid_honoured));
            println!(
                "guest PMU:                       {}",
                if r.guest_pmu_version == 0 {
                    "none (krr does not need one)".to_string()
                } else {
                    format!("version {}", r.guest_pmu_version)
                }
            );
            println!(
                "guest TSC:                       {}",
                match r.guest_tsc_khz {
                    Some(k) if r.ring0_native() => format!(
                        "{}.{:03} MHz (KVM_GET_TSC_KHZ; the guest is told, and calibrates nothing)",
                        k / 1000,
                        k % 1000
                    ),
                    Some(k) => format!(
                        "{}.{:03} MHz (KVM_GET_TSC_KHZ; not told to a guest whose ring 0 is emulated)",
                        k / 1000,
                        k % 1000
                    ),
                    None => "unknown (the guest calibrates it)".to_string(),
                }
            );
            println!("KVM runs a Linux guest:          {}", yes(r.runs_linux()));
        }
        Err(e) => println!("KVM:                             not usable: {e}"),
    }
    match krr_emu_speed() {
        Some(ips) => {
            println!("krr-emu speed:                   {:.1} M instructions/s (register loop)", ips / 1e6)
        }
        None => println!("krr-emu speed:                   not measured"),
    }
    // The same probe decides, so doctor and `--accel auto` cannot disagree.
    let (accel, why, _) = krr_vmm::vm::auto_accel(probe);
    println!("--accel auto picks:              {} ({why})", accel.name());
    println!("(probed in {:.2} s)", t.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Instructions per second of krr-emu on a register-only loop in 64-bit mode, over ~0.2 s.
fn krr_emu_speed() -> Option<f64> {
    use krr_emu::{Cpu, FlatMemory, GuestMemory, SimplePlatform};
    let mut mem = FlatMemory::new(4 << 20);
    // Page tables at 0x1000: one 2 MiB identity page.
    mem.write(0x1000, &(0x2000u64 | 3).to_le_bytes());
    mem.write(0x2000, &(0x3000u64 | 3).to_le_bytes());
    mem.write(0x3000, &0x83u64.to_le_bytes());
    // 1: add rax, rbx; xor rcx, rax; dec rdx; jnz 1b; hlt
    let code = [0x48, 0x01, 0xd8, 0x48, 0x31, 0xc1, 0x48, 0xff, 0xca, 0x75, 0xf5, 0xf4];
    mem.write(0x10000, &code);
    let mut cpu = Cpu::new_long_mode(0x1000);
    cpu.rip = 0x10000;
    cpu.gpr[2] = u64::MAX;
    let mut platform = SimplePlatform::new();
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed().as_secs_f64() < 0.2 {
        let before = cpu.icount;
        cpu.run(&mut mem, &mut platform, 1_000_000, |_| false).ok()?;
        total += cpu.icount - before;
    }
    Some(total as f64 / start.elapsed().as_secs_f64())
}
