//! Saving and restoring a KVM VM's state: every vCPU's registers, FPU/XSAVE, MSRs, local APIC,
//! MP state and pending events, and the VM's PIC/I/O APIC, PIT and clock. The snapshot file
//! stores it as JSON (kvm-bindings' serde support) next to guest memory.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_state2, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
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
    0x6e0,
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
        v.set_sregs(&s.sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        v.set_regs(&s.regs).map_err(ioctl("KVM_SET_REGS"))?;
        // SAFETY: `kvm_xsave` is the legacy fixed-size (4 KiB) XSAVE area that KVM_GET_XSAVE
        // filled on a vCPU of the same kind; no extended (XSAVE2) components follow it.
        unsafe { v.set_xsave(&s.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
        if let Some(x) = &s.xcrs {
            v.set_xcrs(x).map_err(ioctl("KVM_SET_XCRS"))?;
        }
        let msrs = Msrs::from_entries(&s.msrs).map_err(|e| KvmError::Snapshot(format!("MSR list: {e:?}")))?;
        v.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        v.set_lapic(&s.lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
        v.set_mp_state(s.mp_state).map_err(ioctl("KVM_SET_MP_STATE"))?;
        v.set_vcpu_events(&s.events).map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
    }
    Ok(())
}
