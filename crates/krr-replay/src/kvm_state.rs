//! A start snapshot recorded on the `kvm` backend holds KVM's vCPU state (`KVMS`): turn it into
//! the krr-emu CPU that continues from the same instruction.

use krr_emu::{Cpu, DescriptorTable, SegReg, Segment};
use krr_vmm::kvm::KvmVmState;

use crate::ReplayError;

fn segment(s: &kvm_bindings::kvm_segment) -> Segment {
    Segment {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        typ: s.type_,
        s: s.s != 0,
        dpl: s.dpl,
        present: s.present != 0,
        avl: s.avl != 0,
        l: s.l != 0,
        db: s.db != 0,
        g: s.g != 0,
        unusable: s.unusable != 0,
    }
}

/// The CPU of vCPU `index` of `state`.
pub fn cpu_from_kvm(state: &KvmVmState, index: usize) -> Result<Cpu, ReplayError> {
    let v = state
        .vcpus
        .get(index)
        .ok_or_else(|| ReplayError::Snapshot(format!("the KVM state has no vCPU {index}")))?;
    let mut cpu = Cpu::new();
    let r = &v.regs;
    // x86 encoding order: RAX RCX RDX RBX RSP RBP RSI RDI R8..R15.
    cpu.gpr = [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
        r.r14, r.r15,
    ];
    cpu.rip = r.rip;
    cpu.rflags = r.rflags;
    let s = &v.sregs;
    for (reg, seg) in [
        (SegReg::Es, &s.es),
        (SegReg::Cs, &s.cs),
        (SegReg::Ss, &s.ss),
        (SegReg::Ds, &s.ds),
        (SegReg::Fs, &s.fs),
        (SegReg::Gs, &s.gs),
    ] {
        *cpu.segment_mut(reg) = segment(seg);
    }
    cpu.tr = segment(&s.tr);
    cpu.ldtr = segment(&s.ldt);
    cpu.gdtr = DescriptorTable { base: s.gdt.base, limit: s.gdt.limit };
    cpu.idtr = DescriptorTable { base: s.idt.base, limit: s.idt.limit };
    cpu.cr0 = s.cr0;
    cpu.cr2 = s.cr2;
    cpu.cr3 = s.cr3;
    cpu.cr4 = s.cr4;
    cpu.cr8 = s.cr8;
    cpu.efer = s.efer;
    cpu.msrs.apic_base = s.apic_base;
    for m in &v.msrs {
        // MSRs krr-emu does not keep (the TSC, MTRRs, ...) reach the kernel through the log.
        let _ = cpu.write_msr(m.index, m.data);
    }
    let mut fx = [0u8; 512];
    for (i, w) in v.xsave.region.iter().take(128).enumerate() {
        fx[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    if !cpu.fpu.load_fxsave(&fx, 16) {
        return Err(ReplayError::Snapshot(
            "the saved FPU state has MXCSR bits krr-emu does not support".into(),
        ));
    }
    cpu.halted = v.mp_state.mp_state == kvm_bindings::KVM_MP_STATE_HALTED;
    // The recording ran on the host CPU: every instruction it could execute must work here.
    cpu.features.lzcnt = true;
    cpu.features.bmi1 = true;
    cpu.features.popcnt = true;
    cpu.features.rdtscp = true;
    cpu.features.cx16 = true;
    cpu.features.rdrand = true;
    cpu.features.rdseed = true;
    cpu.flush_tlb_all();
    Ok(cpu)
}
