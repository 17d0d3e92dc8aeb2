//! What this host's KVM can do for krr, measured with tiny guests (`krr doctor`, `--accel auto`).
//!
//! Each probe builds a 2 MiB VM in 64-bit mode with one identity-mapped, user-accessible 2 MiB
//! page, runs a few instructions that end in an `out`, and looks at the state KVM returns.
//! Probes never hang: a watchdog kicks the vCPU after a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::kvm::{kick, GuestRam};

const MEM: usize = 2 << 20;
const GDT: u64 = 0x500;
/// A 64-bit TSS with an all-zero I/O permission bitmap: some KVMs run guest ring 3 with IOPL 0
/// whatever RFLAGS says, so the final `out` must be allowed by the bitmap instead.
const TSS: u64 = 0x10000;
const TSS_LIMIT: u32 = 0x68 + 0x2000;
const PML4: u64 = 0x1000;
const USER_CODE: u64 = 0x4000;
const KERNEL_CODE: u64 = 0x5000;
const PROBE_PORT: u16 = 0x510;
const KERNEL_CS: u16 = 0x08;
const USER_CS: u16 = 0x23;
const USER_SS: u16 = 0x1b;

/// The answers `krr doctor` prints.
#[derive(Debug, Clone)]
pub struct KvmReport {
    /// Nanoseconds per `dec; jnz` iteration in guest ring 3 and ring 0.
    pub ring3_ns_per_iter: f64,
    pub ring0_ns_per_iter: f64,
    /// A ring-3 SYSCALL arrived in ring 0 at LSTAR.
    pub syscall_enters_ring0: bool,
    /// CPUID in the guest returned what KVM_SET_CPUID2 set.
    pub set_cpuid_honoured: bool,
    /// Architectural PMU version KVM offers guests (0 = none).
    pub guest_pmu_version: u32,
    /// The guest TSC's frequency in kHz (KVM_GET_TSC_KHZ), if KVM says.
    pub guest_tsc_khz: Option<u32>,
}

impl KvmReport {
    /// Guest ring 0 runs natively (not through KVM's instruction emulator).
    pub fn ring0_native(&self) -> bool {
        self.ring3_ns_per_iter.is_finite() && self.ring0_ns_per_iter < 20.0 * self.ring3_ns_per_iter.max(0.2)
    }

    /// KVM can run a Linux guest's kernel and user space: what `--accel auto` needs.
    pub fn runs_linux(&self) -> bool {
        self.ring0_native() && self.syscall_enters_ring0
    }
}

/// Errors while probing.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::KvmError),
    #[error("probe VM: {0}")]
    Setup(String),
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> ProbeError {
    move |e| ProbeError::Setup(format!("{what}: {e}"))
}

struct TinyVm {
    vcpu: VcpuFd,
    _vm: VmFd,
    _ram: GuestRam,
}

fn seg(selector: u16, typ: u8, dpl: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: typ,
        present: 1,
        dpl,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        ..Default::default()
    }
}

impl TinyVm {
    /// A VM whose vCPU starts at `code` (placed at USER_CODE or KERNEL_CODE) in ring `cpl`.
    fn new(kvm: &Kvm, user: &[u8], kernel: &[u8], cpl: u8) -> Result<Self, ProbeError> {
        let vm = kvm.create_vm().map_err(setup("KVM_CREATE_VM"))?;
        vm.set_tss_address(0xfffb_d000).map_err(setup("KVM_SET_TSS_ADDR"))?;
        let mut ram = GuestRam::new(MEM).map_err(|e| ProbeError::Setup(e.to_string()))?;
        // Page tables: one user-accessible, writable 2 MiB page at 0.
        ram.write(PML4, &(0x2000u64 | 7).to_le_bytes());
        ram.write(0x2000, &(0x3000u64 | 7).to_le_bytes());
        ram.write(0x3000, &0x87u64.to_le_bytes());
        let gdt: [u64; 7] = [
            0,
            0x00af_9b00_0000_ffff, // 0x08 kernel code 64
            0x00cf_9300_0000_ffff, // 0x10 kernel data
            0x00cf_f300_0000_ffff, // 0x18 user data
            0x00af_fb00_0000_ffff, // 0x20 user code 64
            0x0000_8b01_0000_2068, // 0x28 TSS (busy), base TSS, limit TSS_LIMIT
            0,
        ];
        for (i, d) in gdt.iter().enumerate() {
            ram.write(GDT + i as u64 * 8, &d.to_le_bytes());
        }
        // I/O map base just past the TSS proper; the bitmap (zero: all ports allowed) and its
        // terminating 0xff byte follow.
        ram.write(TSS + 0x66, &0x68u16.to_le_bytes());
        ram.write(TSS + TSS_LIMIT as u64, &[0xff]);
        ram.write(USER_CODE, user);
        ram.write(KERNEL_CODE, kernel);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: ram.host_addr(),
        };
        // SAFETY: `ram` is a live mapping of MEM bytes that `TinyVm` owns for as long as the VM.
        unsafe { vm.set_user_memory_region(region) }.map_err(setup("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(setup("KVM_CREATE_VCPU"))?;
        let mut sregs = vcpu.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
        let (cs, ss) = if cpl == 3 {
            (seg(USER_CS, 0xb, 3, true), seg(USER_SS, 0x3, 3, false))
        } else {
            (seg(KERNEL_CS, 0xb, 0, true), seg(0x10, 0x3, 0, false))
        };
        sregs.cs = cs;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ss, ss, ss, ss, ss);
        sregs.tr = kvm_segment {
            base: TSS,
            limit: TSS_LIMIT,
            selector: 0x28,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        sregs.gdt.base = GDT;
        sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
        sregs.cr0 = 0x8000_0031;
        sregs.cr3 = PML4;
        sregs.cr4 = 0x20;
        sregs.efer = 0xd01; // LMA | LME | SCE
        vcpu.set_sregs(&sregs).map_err(setup("KVM_SET_SREGS"))?;
        let star = ((0x10u64) << 48) | ((KERNEL_CS as u64) << 32);
        let msrs = Msrs::from_entries(&[
            kvm_msr_entry { index: 0xc000_0081, data: star, ..Default::default() },
            kvm_msr_entry { index: 0xc000_0082, data: KERNEL_CODE, ..Default::default() },
            kvm_msr_entry { index: 0xc000_0084, data: 0, ..Default::default() },
        ])
        .map_err(|e| ProbeError::Setup(format!("MSR list: {e:?}")))?;
        vcpu.set_msrs(&msrs).map_err(setup("KVM_SET_MSRS"))?;
        let rip = if cpl == 3 { USER_CODE } else { KERNEL_CODE };
        // IOPL=3 where the KVM honours it; the TSS bitmap covers the rest.
        let regs = kvm_regs { rip, rsp: 0x8000, rflags: 0x3002, ..Default::default() };
        vcpu.set_regs(&regs).map_err(setup("KVM_SET_REGS"))?;
        Ok(TinyVm { vcpu, _vm: vm, _ram: ram })
    }

    /// Run until the probe port is written; `None` on any other exit or after `deadline`.
    fn run_to_out(&mut self, deadline: Duration) -> Option<(Duration, kvm_regs, u16)> {
        let _ = kick::install();
        let done = Arc::new(AtomicBool::new(false));
        let me = unsafe_self_thread();
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Acquire) {
                    if start.elapsed() > deadline {
                        kick::kick_thread(me);
                        std::thread::sleep(Duration::from_millis(50));
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        let start = Instant::now();
        let res = loop {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(PROBE_PORT, _)) => break true,
                Err(e) if e.errno() == libc::EINTR && start.elapsed() <= deadline => {
                    self.vcpu.set_kvm_immediate_exit(0);
                }
                other => {
                    let what = format!("{other:?}");
                    if std::env::var_os("KRR_PROBE_DEBUG").is_some() {
                        let regs = self.vcpu.get_regs();
                        let sregs = self.vcpu.get_sregs();
                        eprintln!("probe exit {what} regs {regs:x?} cs {:x?}", sregs.map(|s| s.cs));
                    }
                    break false;
                }
            }
        };
        let elapsed = start.elapsed();
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        if !res {
            return None;
        }
        let regs = self.vcpu.get_regs().ok()?;
        let cs = self.vcpu.get_sregs().ok()?.cs.selector;
        Some((elapsed, regs, cs))
    }
}

fn unsafe_self_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

/// `mov ecx, n; 1: dec ecx; jnz 1b; mov dx, PROBE_PORT; out dx, al`
fn loop_code(n: u32) -> Vec<u8> {
    let mut c = vec![0xb9];
    c.extend_from_slice(&n.to_le_bytes());
    c.extend_from_slice(&[0xff, 0xc9, 0x75, 0xfc]); // dec ecx; jnz -4
    c.extend_from_slice(&out_code());
    c
}

/// `mov dx, PROBE_PORT; out dx, al; hlt`
fn out_code() -> Vec<u8> {
    let p = PROBE_PORT.to_le_bytes();
    vec![0x66, 0xba, p[0], p[1], 0xee, 0xf4]
}

fn time_loop(kvm: &Kvm, cpl: u8, n: u32) -> Result<Option<f64>, ProbeError> {
    let code = loop_code(n);
    let mut vm = if cpl == 3 { TinyVm::new(kvm, &code, &[], 3)? } else { TinyVm::new(kvm, &[], &code, 0)? };
    Ok(vm.run_to_out(Duration::from_secs(3)).map(|(t, _, _)| t.as_nanos() as f64 / n as f64))
}

/// Run every probe (about a second on a slow host).
pub fn probe_kvm() -> Result<KvmReport, ProbeError> {
    let kvm = crate::kvm::open_kvm()?;
    // Ring 3 first (fast everywhere), then a ring-0 loop sized to stay short even if emulated.
    let ring3 = time_loop(&kvm, 3, 2_000_000)?.unwrap_or(f64::INFINITY);
    let ring0 = time_loop(&kvm, 0, 200_000)?.unwrap_or(f64::INFINITY);

    // `syscall` from ring 3; LSTAR points at `out`. Where does the `out` execute?
    let mut user = vec![0x0f, 0x05];
    user.extend_from_slice(&out_code());
    let mut vm = TinyVm::new(&kvm, &user, &out_code(), 3)?;
    let syscall_enters_ring0 =
        matches!(vm.run_to_out(Duration::from_secs(2)), Some((_, _, cs)) if cs & 3 == 0);

    // CPUID leaf 0 with a vendor string of our own.
    let supported =
        kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(setup("KVM_GET_SUPPORTED_CPUID"))?;
    let guest_pmu_version =
        supported.as_slice().iter().find(|e| e.function == 0xa).map(|e| e.eax & 0xff).unwrap_or(0);
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        if e.function == 0 {
            e.ebx = u32::from_le_bytes(*b"KrrP");
        }
    }
    let mut code = vec![0x31, 0xc0, 0x31, 0xc9, 0x0f, 0xa2]; // xor eax,eax; xor ecx,ecx; cpuid
    code.extend_from_slice(&out_code());
    let mut vm = TinyVm::new(&kvm, &code, &[], 3)?;
    vm.vcpu.set_cpuid2(&cpuid).map_err(setup("KVM_SET_CPUID2"))?;
    let set_cpuid_honoured = matches!(vm.run_to_out(Duration::from_secs(2)),
        Some((_, r, _)) if r.rbx as u32 == u32::from_le_bytes(*b"KrrP"));
    let guest_tsc_khz = vm.vcpu.get_tsc_khz().ok().filter(|&k| k > 0);

    Ok(KvmReport {
        ring3_ns_per_iter: ring3,
        ring0_ns_per_iter: ring0,
        syscall_enters_ring0,
        set_cpuid_honoured,
        guest_pmu_version,
        guest_tsc_khz,
    })
}
