//! One module per subcommand.

pub mod add;
pub mod bench;
pub mod doctor;
pub mod dump;
pub mod emu_coverage;
pub mod gdb;
pub mod guest;
pub mod record;
pub mod replay;
pub mod run;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// Set by the first Ctrl-C or SIGTERM: the run stops and a recording is sealed. A second one
/// ends krr at once.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag before this signal sets it: the second signal exits.
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(FLAG.get_or_init(|| flag).clone())
}

/// A duration for a progress line: `42 s`, `3 min 05 s`, `1 h 02 min`.
pub fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// `krr run --json` / `krr record --json`: how the run ended, as one JSON object on the last line
/// of stdout, with `extra`'s fields (the trace's, when recording) merged in.
pub fn print_json_summary(out: &krr_vmm::RunOutcome, vmlinux: &std::path::Path, extra: serde_json::Value) {
    use krr_vmm::vm::ExitReason;
    let (status, exit_code, detail) = match &out.reason {
        ExitReason::Exited(code) => ("exited", Some(*code), None),
        ExitReason::Panic(line) => ("panic", None, Some(line.clone())),
        ExitReason::Reset => ("reset", None, None),
        ExitReason::Timeout => ("timeout", None, None),
        ExitReason::Interrupted => ("interrupted", None, None),
        ExitReason::KvmCannotRunUserSpace => ("kvm_cannot_run_user_space", None, None),
        ExitReason::SnapshotSaved { path, .. } => ("snapshot_saved", None, Some(path.display().to_string())),
    };
    let mut v = serde_json::json!({
        "status": status,
        "exit_code": exit_code,
        "detail": detail,
        "accel": out.accel.name(),
        "accel_why": out.accel_why,
        "seconds": out.elapsed.as_secs_f64(),
        "to_init_seconds": out.to_init.map(|d| d.as_secs_f64()),
        "guest_instructions": (out.instructions > 0).then_some(out.instructions),
        "console_bytes": out.console.len(),
        "vcpus_at_end": places_at_end(out, vmlinux),
    });
    if let (Some(all), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        all.extend(more);
    }
    // On a line of its own even when the console's last line has no newline.
    let sep = if out.console.is_empty() || out.console.ends_with(b"\n") { "" } else { "\n" };
    println!("{sep}{v}");
}

/// After a timeout or Ctrl-C: one line saying where each vCPU was, with the guest kernel's
/// function names (a hung workload's first question). Nothing when the run ended by itself.
pub fn print_vcpus_at_end(who: &str, out: &krr_vmm::RunOutcome, vmlinux: &std::path::Path) {
    if out.vcpus_at_end.is_empty() {
        return;
    }
    let places = places_at_end(out, vmlinux);
    eprintln!("krr {who}: where the vCPUs were: {}", places.join("; "));
}

/// Each stopped vCPU's place, named with the kernel's functions; the vmlinux's symbols are read
/// only when there is a place to name.
fn places_at_end(out: &krr_vmm::RunOutcome, vmlinux: &std::path::Path) -> Vec<String> {
    if out.vcpus_at_end.is_empty() {
        return Vec::new();
    }
    let mut syms = krr_vmm::boot::function_symbols(vmlinux).unwrap_or_default();
    syms.sort_by_key(|s| s.addr);
    out.vcpus_at_end.iter().map(|p| describe_place(p, &syms)).collect()
}

fn describe_place(p: &krr_vmm::VcpuPlace, syms: &[krr_vmm::boot::FunctionSymbol]) -> String {
    let state = if p.halted { "halted" } else { "running" };
    let irq = if p.interrupts_on { "IF=1" } else { "IF=0" };
    if p.ring == 3 {
        return format!("vCPU {} {state} in user space at {:#x} ({irq})", p.vcpu, p.rip);
    }
    let at = syms.partition_point(|s| s.addr <= p.rip);
    let name = at
        .checked_sub(1)
        .map(|i| &syms[i])
        .filter(|s| s.size == 0 || p.rip < s.addr + s.size)
        .map(|s| format!(" {}+{:#x}", s.name, p.rip - s.addr))
        .unwrap_or_default();
    format!("vCPU {} {state} in the kernel at {:#x}{name} ({irq})", p.vcpu, p.rip)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(super::duration_text(0.4), "0 s");
        assert_eq!(super::duration_text(42.0), "42 s");
        assert_eq!(super::duration_text(185.0), "3 min 05 s");
        assert_eq!(super::duration_text(3720.0), "1 h 02 min");
    }

    use super::*;

    #[test]
    fn a_place_is_named_by_the_function_it_is_in() {
        let syms = vec![
            krr_vmm::boot::FunctionSymbol {
                name: "default_idle".into(),
                addr: 0xffff_ffff_8100_0000,
                size: 0x20,
            },
            krr_vmm::boot::FunctionSymbol {
                name: "schedule".into(),
                addr: 0xffff_ffff_8100_0100,
                size: 0x80,
            },
        ];
        let p = |rip, ring, halted| krr_vmm::VcpuPlace { vcpu: 1, rip, ring, interrupts_on: true, halted };
        assert_eq!(
            describe_place(&p(0xffff_ffff_8100_0005, 0, true), &syms),
            "vCPU 1 halted in the kernel at 0xffffffff81000005 default_idle+0x5 (IF=1)"
        );
        // Between two functions: the address alone.
        assert_eq!(
            describe_place(&p(0xffff_ffff_8100_0050, 0, false), &syms),
            "vCPU 1 running in the kernel at 0xffffffff81000050 (IF=1)"
        );
        assert_eq!(
            describe_place(&p(0x40_1000, 3, false), &syms),
            "vCPU 1 running in user space at 0x401000 (IF=1)"
        );
    }
}
