//! Saving and restoring a KVM VM's state: every vCPU's registers, FPU/XSAVE, MSRs, local APIC,
//! MP state and pending events, and the VM's PIC/I/O APIC, PIT and clock. The snapshot file
//! stores it as JSON (kvm-bindings' serde support) next to guest memory.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_state2, kvm_regs,
    kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use super::{ioctl, KvmError};

/// MSRs a Linux guest changes that are not in kvm_sregs: SYSENTER_CS/ESP/EIP, TSC, MISC_ENABLE,
/// PAT, TSC_DEADLINE, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX.
const MSRS: [u32; 14] = [
    0x174,
    0x175,
    0x176,
    0x10,
    0x1a0,
    0x277,
    MSR_TSC_DEADLINE,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
    0xc000_0103,
    0x3b,
];

/// One vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvmVcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: Option<kvm_xcrs>,
    pub msrs: Vec<kvm_msr_entry>,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
}

/// The whole VM but memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvmVmState {
    pub irqchips: Vec<kvm_irqchip>,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
    pub vcpus: Vec<KvmVcpuState>,
}

/// Read the state of `vm` and its stopped `vcpus`.
pub fn capture(vm: &VmFd, vcpus: &[VcpuFd]) -> Result<KvmVmState, KvmError> {
    let mut irqchips = Vec::new();
    for id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC] {
        let mut chip = kvm_irqchip { chip_id: id, ..Default::default() };
        vm.get_irqchip(&mut chip).map_err(ioctl("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    let pit = vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?;
    let clock = vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?;
    let mut out = Vec::new();
    for v in vcpus {
        // One at a time: KVM_GET_MSRS stops at the first MSR a host does not support.
        let mut msrs = Vec::new();
        for &index in &MSRS {
            let mut one = Msrs::from_entries(&[kvm_msr_entry { index, ..Default::default() }])
                .map_err(|e| KvmError::Snapshot(format!("MSR list: {e:?}")))?;
            if v.get_msrs(&mut one).map_err(ioctl("KVM_GET_MSRS"))? == 1 {
                msrs.push(one.as_slice()[0]);
            }
        }
        out.push(KvmVcpuState {
            regs: v.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
            sregs: v.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
            xsave: v.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?,
            xcrs: v.get_xcrs().ok(),
            msrs,
            lapic: v.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?,
            mp_state: v.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?,
            events: v.get_vcpu_events().map_err(ioctl("KVM_GET_VCPU_EVENTS"))?,
        });
    }
    Ok(KvmVmState { irqchips, pit, clock, vcpus: out })
}

/// Load `state` into a freshly created `vm` with the same number of `vcpus`.
pub fn apply(vm: &VmFd, vcpus: &[VcpuFd], state: &KvmVmState) -> Result<(), KvmError> {
    if vcpus.len() != state.vcpus.len() {
        return Err(KvmError::Snapshot(format!(
            "{} vCPUs saved, {} created",
            state.vcpus.len(),
            vcpus.len()
        )));
    }
    for chip in &state.irqchips {
        vm.set_irqchip(chip).map_err(ioctl("KVM_SET_IRQCHIP"))?;
    }
    vm.set_pit2(&state.pit).map_err(ioctl("KVM_SET_PIT2"))?;
    // Only the clock value; the flags of the saving host mean nothing here.
    let clock = kvm_clock_data { clock: state.clock.clock, ..Default::default() };
    vm.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))?;
    for (v, s) in vcpus.iter().zip(&state.vcpus) {
        // Order as other VMMs restore: registers, FPU, MSRs, then APIC, MP state and events.
        let mut sregs = s.sregs;
        if host_has_svm() {
            sregs.tr = tss_as_svm_keeps_it(sregs.tr);
        }
        v.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        v.set_regs(&s.regs).map_err(ioctl("KVM_SET_REGS"))?;
        // SAFETY: `kvm_xsave` is the legacy fixed-size (4 KiB) XSAVE area that KVM_GET_XSAVE
        // filled on a vCPU of the same kind; no extended (XSAVE2) components follow it.
        unsafe { v.set_xsave(&s.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
        if let Some(x) = &s.xcrs {
            v.set_xcrs(x).map_err(ioctl("KVM_SET_XCRS"))?;
        }
        // IA32_TSC_DEADLINE after the local APIC: KVM drops a deadline written while the APIC
        // timer is not in TSC-deadline mode, and a guest whose armed timer was dropped waits for
        // it forever once every vCPU halts.
        let (before_apic, after_apic) = msrs_around_the_apic(&s.msrs);
        set_msrs(v, &before_apic)?;
        v.set_lapic(&s.lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
        set_msrs(v, &after_apic)?;
        v.set_mp_state(s.mp_state).map_err(ioctl("KVM_SET_MP_STATE"))?;
        v.set_vcpu_events(&s.events).map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
    }
    Ok(())
}

const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// The saved MSRs to write before the local APIC's state, and those to write after it.
fn msrs_around_the_apic(msrs: &[kvm_msr_entry]) -> (Vec<kvm_msr_entry>, Vec<kvm_msr_entry>) {
    msrs.iter().partition(|m| m.index != MSR_TSC_DEADLINE)
}

fn set_msrs(v: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<(), KvmError> {
    if entries.is_empty() {
        return Ok(());
    }
    let msrs = Msrs::from_entries(entries).map_err(|e| KvmError::Snapshot(format!("MSR list: {e:?}")))?;
    v.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
    Ok(())
}

/// Whether this host's KVM runs guests with AMD SVM (AMD and Hygon CPUs) rather than Intel VMX.
fn host_has_svm() -> bool {
    matches!(krr_emu::vendor::Vendor::host_cpuid_vendor().as_str(), "AuthenticAMD" | "HygonGenuine")
}

/// The task register as an SVM guest's own LTR leaves it. KVM_GET_SREGS on SVM always reports
/// the 64-bit TSS as busy (type 11: KVM sets the bit, the VMCB need not carry it), and VMX wants
/// busy at VM entry; SVM's VMRUN does not check TR's type, so on AMD hardware either works. An
/// emulated SVM does care: QEMU's TCG (the nested-KVM harness) keeps TR available (type 9) after
/// LTR and lets a ring-3 `in`/`out` through the TSS's I/O bitmap only then, so a restored guest
/// whose init reads its command from a port after ioperm() took #GP and the kernel panicked
/// ("Attempted to kill init"). Restoring type 9 on SVM hosts serves both.
fn tss_as_svm_keeps_it(mut tr: kvm_segment) -> kvm_segment {
    if tr.type_ == 11 {
        tr.type_ = 9;
    }
    tr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_deadline_is_restored_after_the_apic() {
        let msr = |index, data| kvm_msr_entry { index, data, ..Default::default() };
        let saved: Vec<_> = MSRS.iter().map(|&i| msr(i, u64::from(i))).collect();
        let (before, after) = msrs_around_the_apic(&saved);
        assert_eq!(after.iter().map(|m| (m.index, m.data)).collect::<Vec<_>>(), [(0x6e0, 0x6e0)]);
        assert_eq!(before.len(), MSRS.len() - 1);
        assert!(before.iter().all(|m| m.index != 0x6e0));
    }

    #[test]
    fn a_busy_64_bit_tss_is_restored_available_on_svm() {
        let busy = kvm_segment { selector: 0x40, type_: 11, present: 1, limit: 0x206f, ..Default::default() };
        let tr = tss_as_svm_keeps_it(busy);
        assert_eq!((tr.type_, tr.selector, tr.limit, tr.present), (9, 0x40, 0x206f, 1));
        // Anything else is left as saved.
        let other = kvm_segment { type_: 3, ..Default::default() };
        assert_eq!(tss_as_svm_keeps_it(other).type_, 3);
    }
}
