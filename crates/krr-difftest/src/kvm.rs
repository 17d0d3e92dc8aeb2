//! The reference side: runs a [`Case`] at CPL 3 in a KVM vCPU (on this project's hosts guest ring 3 runs
//! natively, so this is the real CPU). All `unsafe` of the crate lives here (guest RAM mapping, memory
//! slot registration, the watchdog's thread signal).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, kvm_xsave};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::case::{apply_exception_frame, Case, End, Failure, Outcome, RunResult, X87};
use crate::layout::{self, DATA_BASE, DATA_SIZE, RAM_SIZE};

/// Why the KVM side cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("KVM is not available: {0}")]
    NoKvm(String),
    #[error("KVM setup failed: {0}")]
    Setup(String),
}

/// Anonymous private mapping used as guest RAM.
#[derive(Debug)]
struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

impl GuestRam {
    fn new(len: usize) -> Result<GuestRam, KvmError> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(KvmError::Setup(format!("mmap of guest RAM: {}", std::io::Error::last_os_error())));
        }
        Ok(GuestRam { ptr: p.cast(), len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by `self` (unmapped only in Drop).
        // The guest may write it, but only while the vCPU runs, which needs `&mut KvmRunner`, so no such
        // write overlaps this borrow.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `new`; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Kicks the vCPU thread out of KVM_RUN when a run takes longer than the timeout (a sequence that loops).
#[derive(Debug)]
struct Watchdog {
    /// Milliseconds since `epoch` at which the current run times out; 0 when no run is in progress.
    deadline_ms: Arc<AtomicU64>,
    /// The thread running the vCPU (`pthread_t`), set when a run starts.
    target: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Watchdog {
    fn new() -> Result<Watchdog, KvmError> {
        let sig = vmm_sys_util::signal::SIGRTMIN();
        vmm_sys_util::signal::register_signal_handler(sig, kick_handler)
            .map_err(|e| KvmError::Setup(format!("signal handler: {e}")))?;
        let deadline_ms = Arc::new(AtomicU64::new(0));
        let target = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (d, s, t) = (deadline_ms.clone(), stop.clone(), target.clone());
        let thread = std::thread::Builder::new()
            .name("krr-difftest-watchdog".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    let dl = d.load(Ordering::Relaxed);
                    if dl != 0 && epoch.elapsed().as_millis() as u64 > dl {
                        let target = t.load(Ordering::Relaxed) as libc::pthread_t;
                        // SAFETY: `target` is the thread inside `KvmRunner::execute` (armed means a run is
                        // in progress, and `execute` borrows the runner, which joins this thread in Drop,
                        // so that thread is alive); the process has a handler installed for `sig`.
                        unsafe {
                            libc::pthread_kill(target, sig);
                        }
                    }
                }
            })
            .map_err(|e| KvmError::Setup(format!("watchdog thread: {e}")))?;
        Ok(Watchdog { deadline_ms, target, stop, epoch, thread: Some(thread) })
    }

    /// Arms the watchdog for a run on the calling thread.
    fn arm(&self, timeout: Duration) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.target.store(me as u64, Ordering::Relaxed);
        let t = (self.epoch.elapsed() + timeout).as_millis() as u64;
        self.deadline_ms.store(t.max(1), Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs cases in one reusable VM with one vCPU.
#[derive(Debug)]
pub struct KvmRunner {
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    ram: GuestRam,
    sregs: kvm_sregs,
    last_code_len: usize,
    xsave_template: [u32; 1024],
    watchdog: Watchdog,
    /// How long one run may take before it counts as a hang.
    pub timeout: Duration,
}

fn seg(selector: u16, type_: u8, dpl: u8, code64: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!code64),
        s: 1,
        l: u8::from(code64),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// First 32-bit word of XMM0 in the XSAVE legacy area (byte 160).
const XSAVE_XMM0_WORD: usize = 40;
/// The XSTATE_BV word of the XSAVE header (byte 512).
const XSAVE_XSTATE_BV_WORD: usize = 128;

fn xmm_from(w: &[u32]) -> u128 {
    w.iter().rev().fold(0u128, |acc, &x| (acc << 32) | u128::from(x))
}

impl KvmRunner {
    /// Opens /dev/kvm, creates a VM with [`RAM_SIZE`] bytes of RAM holding [`layout::build_image`] and one
    /// vCPU set up for 64-bit long mode at CPL 3.
    /// The device is `/dev/kvm`, or the path in the environment variable `KRR_DIFFTEST_KVM` (tests use it
    /// to check the behaviour without KVM).
    pub fn new() -> Result<KvmRunner, KvmError> {
        let path = std::env::var("KRR_DIFFTEST_KVM").unwrap_or_else(|_| "/dev/kvm".to_string());
        if !std::path::Path::new(&path).exists() {
            return Err(KvmError::NoKvm(format!("{path} does not exist")));
        }
        let cpath =
            std::ffi::CString::new(path.clone()).map_err(|_| KvmError::NoKvm(format!("bad path {path}")))?;
        let kvm =
            Kvm::new_with_path(&cpath).map_err(|e| KvmError::NoKvm(format!("cannot open {path}: {e}")))?;
        let vm = kvm.create_vm().map_err(|e| KvmError::NoKvm(format!("KVM_CREATE_VM: {e}")))?;
        let mut ram = GuestRam::new(RAM_SIZE)?;
        ram.as_mut_slice().copy_from_slice(&layout::build_image());
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM_SIZE as u64,
            userspace_addr: ram.ptr as u64,
        };
        // SAFETY: the region describes `ram`, a live mapping of RAM_SIZE bytes that stays mapped as long as
        // the VM exists (the runner owns both and drops the VM first: field order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| KvmError::Setup(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
        let vcpu = vm.create_vcpu(0).map_err(|e| KvmError::Setup(format!("KVM_CREATE_VCPU: {e}")))?;
        let mut sregs = vcpu.get_sregs().map_err(|e| KvmError::Setup(format!("KVM_GET_SREGS: {e}")))?;
        sregs.cs = seg(layout::USER_CS, 0xb, 3, true);
        let ds = seg(layout::USER_DS, 0x3, 3, false);
        sregs.ss = ds;
        let null = kvm_segment { selector: 0, present: 0, unusable: 1, ..ds };
        sregs.ds = null;
        sregs.es = null;
        sregs.fs = kvm_segment { base: layout::FS_BASE, ..null };
        sregs.gs = kvm_segment { base: layout::GS_BASE, ..null };
        sregs.tr = kvm_segment {
            base: layout::TSS_BASE,
            limit: layout::TSS_LIMIT,
            selector: layout::TSS_SEL,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.ldt = kvm_segment { type_: 2, unusable: 1, ..Default::default() };
        sregs.gdt.base = layout::GDT_BASE;
        sregs.gdt.limit = layout::GDT_LIMIT;
        sregs.idt.base = layout::IDT_BASE;
        sregs.idt.limit = layout::IDT_LIMIT;
        sregs.cr0 = layout::CR0;
        sregs.cr2 = 0;
        sregs.cr3 = layout::PML4_BASE;
        sregs.cr4 = layout::CR4;
        sregs.efer = layout::EFER;
        let xsave_size = kvm.check_extension_int(kvm_ioctls::Cap::Xsave2);
        if xsave_size > 4096 {
            return Err(KvmError::Setup(format!("XSAVE area of {xsave_size} bytes (> 4096) not supported")));
        }
        let mut xsave_template =
            vcpu.get_xsave().map_err(|e| KvmError::Setup(format!("KVM_GET_XSAVE: {e}")))?.region;
        xsave_template[0] = 0x37f; // FCW; FSW 0
        xsave_template[1] = 0; // FTW (abridged): all empty
        xsave_template[XSAVE_XSTATE_BV_WORD] |= 3; // x87 and SSE state present
        let watchdog = Watchdog::new()?;
        Ok(KvmRunner {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            ram,
            sregs,
            last_code_len: 0,
            xsave_template,
            watchdog,
            timeout: Duration::from_secs(2),
        })
    }

    /// Guest physical memory (for inspection).
    pub fn ram(&self) -> &[u8] {
        self.ram.as_slice()
    }

    /// Runs the first `k` instructions of `case` followed by the done `out`.
    pub fn run_prefix(&mut self, case: &Case, k: usize) -> RunResult {
        self.load(case, k).map_err(Failure::Other)?;
        self.execute()
    }

    /// Runs the whole case.
    pub fn run(&mut self, case: &Case) -> RunResult {
        self.run_prefix(case, case.insns.len())
    }

    fn load(&mut self, case: &Case, k: usize) -> Result<(), String> {
        let code = case.code(k);
        if code.len() > layout::CODE_SIZE {
            return Err(format!("code of {} bytes does not fit", code.len()));
        }
        if case.mem.len() != DATA_SIZE {
            return Err(format!("window of {} bytes, expected {DATA_SIZE}", case.mem.len()));
        }
        let last = self.last_code_len;
        let ram = self.ram.as_mut_slice();
        let cb = layout::CODE_BASE as usize;
        // Whatever follows the sequence is `hlt` (#GP at CPL 3), never a previous case's code.
        ram[cb..cb + last].fill(layout::CODE_FILL);
        ram[cb..cb + code.len()].copy_from_slice(&code);
        let db = DATA_BASE as usize;
        ram[db..db + DATA_SIZE].copy_from_slice(&case.mem);
        self.last_code_len = code.len();

        let g = &case.gprs;
        let regs = kvm_regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: layout::CODE_BASE,
            rflags: case.start_rflags(),
        };
        self.vcpu.set_sregs(&self.sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        self.vcpu.set_regs(&regs).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        // KVM_SET_FPU/KVM_GET_FPU lose MXCSR on this host (GET returns 0, SET is ignored): use XSAVE.
        let mut xs = kvm_xsave { region: self.xsave_template, ..Default::default() };
        xs.region[6] = case.mxcsr;
        for (i, x) in case.xmm.iter().enumerate() {
            for (j, w) in x.to_le_bytes().chunks(4).enumerate() {
                xs.region[XSAVE_XMM0_WORD + 4 * i + j] = u32::from_le_bytes(w.try_into().expect("4 bytes"));
            }
        }
        // SAFETY: KVM_CAP_XSAVE2 was checked in `new` to be at most 4096 bytes, the size of `region`, so
        // the kernel reads nothing past the struct.
        unsafe { self.vcpu.set_xsave(&xs) }.map_err(|e| format!("KVM_SET_XSAVE: {e}"))?;
        Ok(())
    }

    fn execute(&mut self) -> RunResult {
        let start = Instant::now();
        self.watchdog.arm(self.timeout);
        let port = loop {
            let exit = self.vcpu.run();
            match exit {
                Ok(VcpuExit::IoOut(port, _)) => break port,
                Ok(VcpuExit::IoIn(port, data)) => {
                    data.fill(0xff);
                    let _ = port;
                    continue;
                }
                Ok(VcpuExit::Hlt) => {
                    self.watchdog.disarm();
                    return Err(Failure::Other("KVM: hlt exit".into()));
                }
                Ok(VcpuExit::Shutdown) => {
                    self.watchdog.disarm();
                    return Err(Failure::Other("KVM: shutdown (triple fault)".into()));
                }
                Ok(VcpuExit::InternalError) => {
                    self.watchdog.disarm();
                    return Err(Failure::Other("KVM: internal error (emulation failure)".into()));
                }
                Ok(other) => {
                    self.watchdog.disarm();
                    return Err(Failure::Other(format!("KVM: unexpected exit {other:?}")));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if start.elapsed() >= self.timeout {
                        self.watchdog.disarm();
                        let regs = self.vcpu.get_regs().ok();
                        return Err(Failure::Other(format!(
                            "KVM: timeout after {:?} (rip {:#x?})",
                            self.timeout,
                            regs.map(|r| r.rip)
                        )));
                    }
                    continue;
                }
                Err(e) => {
                    self.watchdog.disarm();
                    return Err(Failure::Other(format!("KVM_RUN: {e}")));
                }
            }
        };
        self.watchdog.disarm();
        let r = self.vcpu.get_regs().map_err(|e| Failure::Other(format!("KVM_GET_REGS: {e}")))?;
        let xs = self.vcpu.get_xsave().map_err(|e| Failure::Other(format!("KVM_GET_XSAVE: {e}")))?;
        let mut out = Outcome {
            end: End::Done,
            gprs: [
                r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
                r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
            xmm: std::array::from_fn(|i| xmm_from(&xs.region[XSAVE_XMM0_WORD + 4 * i..][..4])),
            mxcsr: xs.region[6],
            x87: {
                let b: Vec<u8> = xs.region[..40].iter().flat_map(|w| w.to_le_bytes()).collect();
                X87 {
                    fcw: u16::from_le_bytes([b[0], b[1]]),
                    fsw: u16::from_le_bytes([b[2], b[3]]),
                    ftw: b[4],
                    st: std::array::from_fn(|i| b[32 + 16 * i..42 + 16 * i].try_into().expect("10 bytes")),
                }
            },
            mem: self.ram()[DATA_BASE as usize..DATA_BASE as usize + DATA_SIZE].to_vec(),
        };
        if port == layout::DONE_PORT {
            // KVM reports RIP after the `out`; the outcome names the `out` itself (as krr-emu, which stops
            // before retiring it).
            out.rip = r.rip.wrapping_sub(layout::DONE_INSN.len() as u64);
            return Ok(out);
        }
        let vector = port.wrapping_sub(layout::EXC_PORT_BASE);
        if vector >= u16::from(layout::EXC_VECTORS) {
            return Err(Failure::Other(format!("KVM: out to unexpected port {port:#x} at rip {:#x}", r.rip)));
        }
        let vector = vector as u8;
        let cr2 = if vector == 14 {
            self.vcpu.get_sregs().map_err(|e| Failure::Other(format!("KVM_GET_SREGS: {e}")))?.cr2
        } else {
            0
        };
        let ram = self.ram();
        let rd = |a: u64| {
            let a = a as usize;
            ram.get(a..a + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        apply_exception_frame(&mut out, vector, cr2, rd).map_err(|e| Failure::Other(format!("KVM: {e}")))?;
        Ok(out)
    }
}
