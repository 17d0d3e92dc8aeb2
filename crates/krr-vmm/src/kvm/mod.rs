//! The `kvm` backend: one thread per vCPU on stock KVM, with KVM's in-kernel irqchip (local APICs,
//! I/O APIC, PIC) and PIT. The VMM only handles port I/O to its own devices.

mod memory;
pub mod state;

pub use state::KvmVmState;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_pit_config, kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, Msrs,
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

pub use memory::GuestRam;

use crate::boot::{BootPlan, FlatSegment};
use crate::cpuid::{reduce, CpuidLeaf};
use crate::devices::{Devices, IrqSink, PortAction, CMD_PORT};
use crate::recorder::{Recorder, CTRL_PANIC, CTRL_START, PORT_CTRL, PORT_FLUSH};

/// Errors of the KVM backend.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("KVM is not available ({0}); use --accel emu")]
    NoKvm(String),
    #[error("KVM: {what}: {err}")]
    Ioctl { what: &'static str, err: kvm_ioctls::Error },
    #[error("cannot allocate {size} MiB of guest memory: {err}")]
    Memory { size: u64, err: std::io::Error },
    #[error("boot data at {0:#x} does not fit in guest memory")]
    BootWrite(u64),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |err| KvmError::Ioctl { what, err }
}

/// Why a vCPU thread stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    Exit(u8),
    Reset,
    /// The guest triple-faulted or KVM reported a shutdown.
    Shutdown,
    /// KVM could not run the guest (internal error, failed entry, unexpected exit).
    Failed(String),
    /// Asked to stop by the VMM.
    Kicked,
    /// The guest's init is about to read its command and a snapshot was requested.
    SnapshotPoint,
    /// The guest agent started recording: the VMM must snapshot the machine now.
    AgentStart,
}

/// Pulses ISA lines on KVM's in-kernel I/O APIC and PIC.
struct KvmIrq(Arc<VmFd>);

impl IrqSink for KvmIrq {
    fn pulse(&self, irq: u32) {
        let _ = self.0.set_irq_line(irq, true);
        let _ = self.0.set_irq_line(irq, false);
    }
}

/// A VM on KVM, ready to run.
pub struct KvmVm {
    vcpus: Vec<VcpuFd>,
    vm: Arc<VmFd>,
    _kvm: Kvm,
    ram: GuestRam,
    cpuid: Vec<krr_trace::CpuidTable>,
}

/// A VM whose vCPU threads ran and stopped: what a snapshot is taken from, and what resumes.
pub struct StoppedVm {
    pub vm: Arc<VmFd>,
    pub vcpus: Vec<VcpuFd>,
    pub ram: Arc<GuestRam>,
    kvm: Kvm,
}

impl std::fmt::Debug for StoppedVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoppedVm").field("vcpus", &self.vcpus.len()).finish_non_exhaustive()
    }
}

impl StoppedVm {
    /// Capture the VM's device and vCPU state.
    pub fn state(&self) -> Result<KvmVmState, KvmError> {
        state::capture(&self.vm, &self.vcpus)
    }

    /// Where each vCPU stands (registers KVM gives; a vCPU whose state cannot be read is left
    /// out).
    pub fn vcpu_places(&self) -> Vec<crate::vm::VcpuPlace> {
        self.vcpus
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let regs = v.get_regs().ok()?;
                let sregs = v.get_sregs().ok()?;
                let mp = v.get_mp_state().ok()?;
                Some(crate::vm::VcpuPlace {
                    vcpu: i as u32,
                    rip: regs.rip,
                    ring: sregs.cs.dpl,
                    interrupts_on: regs.rflags & (1 << 9) != 0,
                    halted: mp.mp_state != kvm_bindings::KVM_MP_STATE_RUNNABLE,
                })
            })
            .collect()
    }

    /// Run the vCPUs again where they stopped (see [`KvmVm::start`]).
    pub fn resume(
        self,
        devices: Arc<Mutex<Devices>>,
        stop: Arc<AtomicBool>,
        report: Sender<(u32, VcpuStop)>,
        recorder: Option<Arc<Mutex<Recorder>>>,
    ) -> std::io::Result<RunningVm> {
        spawn(self.vcpus, self.vm, self.ram, self.kvm, VcpuContext { devices, stop, report, recorder })
    }
}

impl std::fmt::Debug for KvmVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVm").field("vcpus", &self.vcpus.len()).finish_non_exhaustive()
    }
}

/// The IRQ sink for devices of a VM on KVM.
pub fn irq_sink(vm: &KvmVm) -> Arc<dyn IrqSink> {
    Arc::new(KvmIrq(vm.vm.clone()))
}

/// Open the KVM device with a clear error: `/dev/kvm`, or `$KRR_KVM_DEVICE` (tests use it to
/// stand for a host without KVM).
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let path = std::env::var("KRR_KVM_DEVICE").unwrap_or_else(|_| "/dev/kvm".into());
    let c = std::ffi::CString::new(path.clone())
        .map_err(|_| KvmError::NoKvm(format!("bad device path {path:?}")))?;
    Kvm::new_with_path(c).map_err(|e| KvmError::NoKvm(format!("{path}: {e}")))
}

fn segment(s: FlatSegment, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: s.selector,
        type_: s.typ,
        present: 1,
        dpl,
        db: u8::from(s.db),
        s: 1,
        l: u8::from(s.long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

impl KvmVm {
    /// Create the VM, its memory and vCPUs, and apply `plan` (memory contents, BSP registers).
    /// `tsc_deadline`: offer the TSC-deadline timer, where the guest is told its TSC rate.
    pub fn new(mem_bytes: u64, vcpus: u32, plan: &BootPlan, tsc_deadline: bool) -> Result<Self, KvmError> {
        let mut vm = Self::create(mem_bytes, vcpus, tsc_deadline)?;
        for (gpa, data) in &plan.writes {
            if !vm.ram.write(*gpa, data) {
                return Err(KvmError::BootWrite(*gpa));
            }
        }
        set_boot_state(&vm.vcpus[0], plan)?;
        Ok(vm)
    }

    /// Rebuild a VM from a snapshot's state and memory (`pages`: (frame number, bytes));
    /// `tsc_deadline` as the saved VM was booted.
    pub fn restore(
        state: &KvmVmState,
        mem_bytes: u64,
        tsc_deadline: bool,
        pages: impl FnOnce(&mut GuestRam) -> Result<(), String>,
    ) -> Result<Self, KvmError> {
        let mut vm = Self::create(mem_bytes, state.vcpus.len() as u32, tsc_deadline)?;
        pages(&mut vm.ram).map_err(KvmError::Snapshot)?;
        state::apply(&vm.vm, &vm.vcpus, state)?;
        Ok(vm)
    }

    /// Guest memory.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The VM and vCPUs without memory contents or boot state.
    fn create(mem_bytes: u64, vcpus: u32, tsc_deadline: bool) -> Result<Self, KvmError> {
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        vm.set_tss_address(0xfffb_d000).map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(0xfffb_c000).map_err(ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;

        let ram = GuestRam::new(mem_bytes as usize)
            .map_err(|e| KvmError::Memory { size: mem_bytes >> 20, err: e })?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.size() as u64,
            userspace_addr: ram.host_addr(),
        };
        // SAFETY: the region is the live mapping owned by `ram`; `KvmVm` keeps it (and `start`
        // keeps it for the vCPU threads) for as long as any vCPU can run.
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;

        let supported =
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let tsc_deadline = tsc_deadline && kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        let mut fds = Vec::new();
        let mut tables = Vec::new();
        for id in 0..vcpus {
            let vcpu = vm.create_vcpu(id as u64).map_err(ioctl("KVM_CREATE_VCPU"))?;
            let mut leaves: Vec<CpuidLeaf> = supported
                .as_slice()
                .iter()
                .map(|e| CpuidLeaf {
                    function: e.function,
                    index: e.index,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx: e.ecx,
                    edx: e.edx,
                })
                .collect();
            reduce(&mut leaves, id);
            if tsc_deadline {
                // KVM's in-kernel local APIC has TSC-deadline mode, which KVM_GET_SUPPORTED_CPUID
                // does not list (VMMs set the bit on KVM_CAP_TSC_DEADLINE_TIMER); krr-emu has it
                // too, and the guest then calibrates no APIC timer.
                if let Some(l) = leaves.iter_mut().find(|l| l.function == 1) {
                    l.ecx |= 1 << 24;
                }
            }
            let mut cpuid = supported.clone();
            let kept: Vec<_> = supported
                .as_slice()
                .iter()
                .filter_map(|e| {
                    leaves.iter().find(|l| l.function == e.function && l.index == e.index).map(|l| {
                        let mut e = *e;
                        (e.eax, e.ebx, e.ecx, e.edx) = (l.eax, l.ebx, l.ecx, l.edx);
                        e
                    })
                })
                .collect();
            cpuid = CpuId::from_entries(&kept).unwrap_or(cpuid);
            vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
            tables.push(krr_trace::CpuidTable {
                vcpu: id,
                entries: cpuid
                    .as_slice()
                    .iter()
                    .map(|e| krr_trace::CpuidEntry {
                        leaf: e.function,
                        subleaf: e.index,
                        eax: e.eax,
                        ebx: e.ebx,
                        ecx: e.ecx,
                        edx: e.edx,
                    })
                    .collect(),
            });
            let msrs = Msrs::from_entries(&[kvm_msr_entry { index: 0x1a0, data: 1, ..Default::default() }])
                .map_err(|_| KvmError::Ioctl {
                what: "MSR list",
                err: kvm_ioctls::Error::new(libc::EINVAL),
            })?;
            vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
            let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
            vcpu.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))?;
            set_lint(&vcpu)?;
            fds.push(vcpu);
        }
        Ok(KvmVm { vcpus: fds, vm: Arc::new(vm), _kvm: kvm, ram, cpuid: tables })
    }

    /// The CPUID table set on each vCPU (for the trace header; some hosts ignore it, which is
    /// why the guest agent logs the CPUID results the kernel actually sees).
    pub fn cpuid_tables(&self) -> &[krr_trace::CpuidTable] {
        &self.cpuid
    }

    /// Run every vCPU on its own thread until one stops or `stop` is set; each thread reports
    /// why it stopped on `report`. With a recorder, the threads serve the guest agent's ports.
    pub fn start(
        self,
        devices: Arc<Mutex<Devices>>,
        stop: Arc<AtomicBool>,
        report: Sender<(u32, VcpuStop)>,
        recorder: Option<Arc<Mutex<Recorder>>>,
    ) -> std::io::Result<RunningVm> {
        let KvmVm { vcpus, vm, _kvm, ram, .. } = self;
        spawn(vcpus, vm, Arc::new(ram), _kvm, VcpuContext { devices, stop, report, recorder })
    }
}

/// What every vCPU thread shares.
#[derive(Clone)]
struct VcpuContext {
    devices: Arc<Mutex<Devices>>,
    stop: Arc<AtomicBool>,
    report: Sender<(u32, VcpuStop)>,
    recorder: Option<Arc<Mutex<Recorder>>>,
}

fn spawn(
    vcpus: Vec<VcpuFd>,
    vm: Arc<VmFd>,
    ram: Arc<GuestRam>,
    kvm: Kvm,
    ctx: VcpuContext,
) -> std::io::Result<RunningVm> {
    kick::install()?;
    let mut handles = Vec::new();
    for (id, mut vcpu) in vcpus.into_iter().enumerate() {
        // Guest memory stays alive until the last vCPU thread ends.
        let ram = ram.clone();
        let ctx = ctx.clone();
        let h = std::thread::Builder::new().name(format!("vcpu{id}")).spawn(move || {
            let why = run_vcpu(&mut vcpu, id, &ctx, &ram);
            drop(ram);
            let _ = ctx.report.send((id as u32, why));
            vcpu
        })?;
        handles.push(h);
    }
    Ok(RunningVm { vm, ram, handles, kvm })
}

/// vCPU threads at work.
pub struct RunningVm {
    vm: Arc<VmFd>,
    ram: Arc<GuestRam>,
    handles: Vec<std::thread::JoinHandle<VcpuFd>>,
    kvm: Kvm,
}

impl std::fmt::Debug for RunningVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningVm").field("vcpus", &self.handles.len()).finish_non_exhaustive()
    }
}

impl RunningVm {
    /// Kick every vCPU out of KVM_RUN (the caller has set the stop flag) and wait for them.
    pub fn stop(self) -> StoppedVm {
        // A signal that lands between a thread's look at the stop flag and its KVM_RUN is lost,
        // and an idle guest (tickless, every vCPU in HLT) may never exit on its own: kick until
        // each thread has ended.
        for h in &self.handles {
            while !h.is_finished() {
                kick::kick(h);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let mut vcpus = Vec::new();
        for h in self.handles {
            if let Ok(v) = h.join() {
                vcpus.push(v);
            }
        }
        StoppedVm { vm: self.vm, vcpus, ram: self.ram, kvm: self.kvm }
    }

    /// Guest memory (readable while the vCPUs run).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }
}

/// Finish what KVM_RUN left pending (an OUT's RIP advance, an MMIO write) so the state read
/// afterwards is consistent: KVM_RUN with immediate_exit returns at once after completing it.
fn settle(vcpu: &mut VcpuFd) {
    vcpu.set_kvm_immediate_exit(1);
    let _ = vcpu.run();
    vcpu.set_kvm_immediate_exit(0);
}

/// A VM exit's kind, for the trace log (the exit itself borrows the vCPU's run area).
fn exit_kind(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::IoIn(..) => "io-in",
        VcpuExit::IoOut(..) => "io-out",
        VcpuExit::MmioRead(..) => "mmio-read",
        VcpuExit::MmioWrite(..) => "mmio-write",
        VcpuExit::Hlt => "hlt",
        VcpuExit::Shutdown => "shutdown",
        VcpuExit::SystemEvent(..) => "system-event",
        VcpuExit::FailEntry(..) => "fail-entry",
        VcpuExit::InternalError => "internal-error",
        VcpuExit::Intr => "intr",
        _ => "other",
    }
}

fn run_vcpu(vcpu: &mut VcpuFd, id: usize, ctx: &VcpuContext, ram: &GuestRam) -> VcpuStop {
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            settle(vcpu);
            return VcpuStop::Kicked;
        }
        let exit = vcpu.run();
        tracing::trace!(vcpu = id, exit = ?exit.as_ref().map(exit_kind), "KVM exit");
        let lock = || ctx.devices.lock().unwrap_or_else(|p| p.into_inner());
        match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                if port == CMD_PORT && data.len() == 4 && lock().take_snapshot_request() {
                    // Leave the IN uncompleted: RIP still points at it, so a VM restored from
                    // this state executes it again and reads its own command.
                    return VcpuStop::SnapshotPoint;
                }
                let v = lock().io_in(port, data.len() as u8);
                let n = data.len().min(4);
                data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let mut v = [0u8; 4];
                let n = data.len().min(4);
                v[..n].copy_from_slice(&data[..n]);
                let value = u32::from_le_bytes(v);
                if let (PORT_FLUSH | PORT_CTRL, Some(rec)) = (port, &ctx.recorder) {
                    match agent_port(rec, ram, port, value) {
                        Ok(None) => continue,
                        Ok(Some(stop)) => return stop,
                        Err(msg) => return VcpuStop::Failed(msg),
                    }
                }
                match lock().io_out(port, n as u8, value) {
                    PortAction::Continue => {}
                    PortAction::Exit(code) => return VcpuStop::Exit(code),
                    PortAction::Reset => return VcpuStop::Reset,
                }
            }
            Ok(VcpuExit::MmioRead(_, data)) => data.fill(0xff),
            Ok(VcpuExit::MmioWrite(..)) => {}
            Ok(VcpuExit::Hlt) => return VcpuStop::Failed("vCPU halted outside the in-kernel irqchip".into()),
            Ok(VcpuExit::Shutdown) => return VcpuStop::Shutdown,
            Ok(VcpuExit::SystemEvent(t, _)) => {
                return if t == kvm_bindings::KVM_SYSTEM_EVENT_RESET {
                    VcpuStop::Reset
                } else {
                    VcpuStop::Shutdown
                };
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return VcpuStop::Failed(format!(
                    "KVM failed to enter the guest (reason {reason:#x}, cpu {cpu})"
                ));
            }
            Ok(VcpuExit::InternalError) => {
                let rip = vcpu.get_regs().map(|r: kvm_regs| r.rip).unwrap_or(0);
                return VcpuStop::Failed(format!(
                    "KVM internal error on vCPU {id} at RIP {rip:#x} (the host's KVM could not emulate an instruction)"
                ));
            }
            Ok(other) => return VcpuStop::Failed(format!("unexpected KVM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => return VcpuStop::Failed(format!("KVM_RUN: {e}")),
        }
    }
}

/// The guest agent wrote to one of its ports: drain a full ring (the vCPU waits, so the guest
/// sees its ring exactly as it left it), note a panic, or stop for the start snapshot.
fn agent_port(
    rec: &Mutex<Recorder>,
    ram: &GuestRam,
    port: u16,
    value: u32,
) -> Result<Option<VcpuStop>, String> {
    let mut rec = rec.lock().unwrap_or_else(|p| p.into_inner());
    match (port, value) {
        (PORT_FLUSH, used) => {
            rec.on_flush(used as u64, &|gpa, buf| ram.read(gpa, buf)).map_err(|e| e.to_string())?
        }
        (_, CTRL_START) => return Ok(Some(VcpuStop::AgentStart)),
        (_, CTRL_PANIC) => rec.on_panic(),
        (_, other) => return Err(format!("the guest agent sent an unknown control value {other}")),
    }
    Ok(None)
}

fn set_boot_state(vcpu: &VcpuFd, plan: &BootPlan) -> Result<(), KvmError> {
    let e = &plan.entry;
    let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    sregs.cs = segment(e.cs, 0);
    let ds = segment(e.ds, 0);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ds, ds, ds, ds, ds);
    sregs.gdt.base = e.gdt_base;
    sregs.gdt.limit = e.gdt_limit;
    sregs.cr0 = e.cr0;
    sregs.cr3 = e.cr3;
    sregs.cr4 = e.cr4;
    sregs.efer = e.efer;
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    let regs = kvm_regs { rip: e.rip, rsi: e.rsi, rsp: e.rsp, rflags: e.rflags, ..Default::default() };
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware would leave them.
fn set_lint(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let mut lapic = vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
    for (off, mode) in [(0x350usize, 0x7u32), (0x360, 0x4)] {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = lapic.regs[off + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *x as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))
}

/// A VM with KVM's in-kernel local APIC and one vCPU that never runs, kept until dropped.
///
/// Each KVM VM that comes and goes flips the host kernel's "some local APIC is software
/// disabled" static key twice (KVM counts vCPUs whose APIC is still in its reset state), and
/// each flip makes the host patch its own text with INT3. While this VM lives, the count never
/// drops to zero and the host's code stays as it is. The nested harness holds one in L1:
/// QEMU's TCG can keep running stale code after such a patch (docs/nested-kvm.md).
#[derive(Debug)]
pub struct ApicKeyHold {
    _vcpu: VcpuFd,
    _vm: VmFd,
}

impl ApicKeyHold {
    pub fn new() -> Result<Self, KvmError> {
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        Ok(ApicKeyHold { _vcpu: vcpu, _vm: vm })
    }
}

/// Kicking vCPU threads out of KVM_RUN: a no-op handler for a real-time signal, so the signal
/// interrupts the ioctl (EINTR) without killing the process.
pub mod kick {
    use std::os::unix::thread::JoinHandleExt;

    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

    fn signum() -> libc::c_int {
        vmm_sys_util::signal::SIGRTMIN()
    }

    pub(crate) fn install() -> std::io::Result<()> {
        vmm_sys_util::signal::register_signal_handler(signum(), noop)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    /// Interrupt `h`'s thread if it is inside KVM_RUN.
    pub fn kick<T>(h: &std::thread::JoinHandle<T>) {
        kick_thread(h.as_pthread_t());
    }

    /// Interrupt thread `t` (which must still be alive) if it is inside KVM_RUN.
    pub fn kick_thread(t: libc::pthread_t) {
        // SAFETY: pthread_kill with a signal whose handler is installed (a no-op); callers pass
        // threads that have not been joined.
        unsafe { libc::pthread_kill(t, signum()) };
    }
}
