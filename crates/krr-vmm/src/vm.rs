//! Running a guest: pick the backend, boot, watch the console, and say how the run ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krr_emu::GuestMemory;

use crate::boot::{plan, BootConfig, BootError, BootPlan};
use crate::devices::DevicesSnapshot;
use crate::devices::{Console, ConsoleEvent, Devices, Echo};
use crate::emu::{emu_irq_sink, EmuStop, EmuVm};
use crate::kvm::{irq_sink, KvmError, KvmVm, KvmVmState, StoppedVm, VcpuStop};
use crate::probe::{probe_kvm, ProbeError};
use crate::recorder::{
    RecordSummary, Recorder, RecorderError, RingLocation, StartPoint, CTRL_PANIC, CTRL_START, PORT_CTRL,
    PORT_FLUSH,
};
use crate::snapshot::{decode_memory, encode_memory, SnapshotFile, SnapshotMeta};

/// The kernel command line krr boots with. `noxsave` and `clearcpuid` keep the kernel on code
/// paths krr-emu implements even where a host ignores KVM_SET_CPUID2 (DESIGN §12), so a trace
/// recorded on either backend replays on the emulator.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr panic=-1 idle=halt noxsave \
     clearcpuid=smap,smep,popcnt,rdpid,fsgsbase,pku,umip,avx,xsave";

/// The kernel parameter that gives a kvm guest its TSC rate (and with it the TSC-deadline timer).
const TSC_KHZ_PARAM: &str = "tsc_early_khz=";

/// Which CPU backend runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Emu,
    /// `kvm` if the host's KVM can run a Linux guest (kernel and user space), else `emu`.
    Auto,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Emu => "emu",
            Accel::Auto => "auto",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub accel: Accel,
    pub vcpus: u32,
    pub mem_bytes: u64,
    pub vmlinux: PathBuf,
    pub initrd: Option<PathBuf>,
    /// A cpio archive appended to the initramfs (`--add`); empty for none.
    pub initrd_extra: Vec<u8>,
    pub cmdline: String,
    /// What of the guest console to copy to stdout while it runs.
    pub echo: Echo,
    /// Give up after this long.
    pub timeout: Option<Duration>,
    /// The command the guest's init runs (through the command port).
    pub command: Vec<String>,
    /// Stop at the snapshot point (init asking for its command) and save the machine here.
    pub save_snapshot: Option<PathBuf>,
    /// Resume this snapshot instead of booting.
    pub from_snapshot: Option<PathBuf>,
    /// Testing aid (kvm): save the snapshot when the console shows this text, instead of at the
    /// snapshot point, so KVM save/restore can be exercised on hosts whose KVM never reaches init.
    pub snapshot_on_console: Option<String>,
    /// Record the run into a trace (the guest kernel must carry the krr agent).
    pub record: Option<RecordConfig>,
    /// Set by the caller (Ctrl-C, SIGTERM) to stop the run; a recording is sealed.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Count instructions by privilege and origin (emu; see [`crate::emu::Profile`]).
    pub profile: bool,
    /// emu: vary the vCPUs' time slices from this seed (see [`crate::emu::EmuVm::vary_slices`]).
    pub emu_seed: Option<u64>,
}

/// What `krr record` asks of a run.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// The trace directory (created; must be empty).
    pub dir: PathBuf,
    /// Bytes of guest RAM for the agent's ring.
    pub ring_bytes: u64,
    /// When the agent starts recording (`krr.start=`).
    pub start: StartPoint,
    /// Written into the trace header, e.g. `krr 0.1.0`.
    pub producer: String,
    /// Kernel release and source version for the trace header.
    pub kernel_version: String,
    /// Told how the recording goes about once a second (`krr record` on a terminal).
    pub progress: Option<crate::recorder::ProgressSink>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The workload exited with this status (through the exit port).
    Exited(u8),
    /// The guest kernel panicked; the panic line.
    Panic(String),
    /// The guest rebooted or triple-faulted without reporting a status.
    Reset,
    /// The run took longer than the timeout.
    Timeout,
    /// The kernel reached `Run /init`, but this host's KVM cannot run guest user space.
    KvmCannotRunUserSpace,
    /// The machine stopped at the snapshot point and was saved.
    SnapshotSaved { path: PathBuf, bytes: u64 },
    /// The caller asked the run to stop (`VmConfig::interrupt`).
    Interrupted,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub reason: ExitReason,
    /// The backend that actually ran the guest.
    pub accel: Accel,
    /// Why that backend was chosen (for `auto`).
    pub accel_why: String,
    pub console: Vec<u8>,
    pub elapsed: Duration,
    /// Time from start to the kernel's `Run /init` line.
    pub to_init: Option<Duration>,
    /// Guest instructions executed (emu backend; 0 on kvm, which cannot count them). After
    /// `from_snapshot`, those executed since the snapshot.
    pub instructions: u64,
    /// Time to load and restore the snapshot (`from_snapshot`).
    pub restore_time: Option<Duration>,
    /// The sealed trace, when recording.
    pub record: Option<RecordSummary>,
    /// Guest instructions executed before recording started (emu; the rest were recorded).
    pub instructions_before_record: u64,
    /// The instruction profile, when asked for (emu).
    pub profile: Option<crate::emu::Profile>,
    /// Wall time from the kernel's `Run /init` line to the end (the workload's part of a run).
    pub after_init: Option<Duration>,
    /// Where each vCPU stood when a run that did not end by itself (timeout, interrupt) was
    /// stopped: what a kernel developer asks first about a hang. Empty otherwise.
    pub vcpus_at_end: Vec<VcpuPlace>,
}

/// Where one vCPU stood when the VM was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuPlace {
    pub vcpu: u32,
    pub rip: u64,
    /// Privilege level (0: kernel, 3: user).
    pub ring: u8,
    /// RFLAGS.IF.
    pub interrupts_on: bool,
    /// Waiting in HLT (or, for an AP, never started).
    pub halted: bool,
}

/// Whether `reason` is one the caller stopped (and so asks where the vCPUs were).
fn stopped_from_outside(reason: &Result<ExitReason, VmError>) -> bool {
    matches!(reason, Ok(ExitReason::Timeout | ExitReason::Interrupted))
}

/// Errors that stop a run before it ends on its own.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("emu backend: {0}")]
    Emu(String),
    /// A snapshot that cannot be used (beyond file damage, which is `Snapshot`).
    #[error("{0}")]
    BadSnapshot(String),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("vCPU {vcpu}: {msg}")]
    Vcpu { vcpu: u32, msg: String },
    #[error("cannot start vCPU threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Record(#[from] RecorderError),
    #[error("{0}")]
    RecordSetup(String),
    /// Options that do not go together.
    #[error("{0}")]
    Config(String),
}

/// Choose the backend for `accel`; returns it and why.
pub fn choose_accel(accel: Accel) -> (Accel, String, Option<crate::probe::KvmReport>) {
    match accel {
        Accel::Kvm => (Accel::Kvm, "requested with --accel kvm".into(), None),
        Accel::Emu => (Accel::Emu, "requested with --accel emu".into(), None),
        Accel::Auto => auto_accel(probe_kvm()),
    }
}

/// What `--accel auto` picks given a KVM probe result, and why.
pub fn auto_accel(
    probe: Result<crate::probe::KvmReport, ProbeError>,
) -> (Accel, String, Option<crate::probe::KvmReport>) {
    match probe {
        Ok(r) if r.runs_linux() => {
            (Accel::Kvm, "KVM runs guest ring 0 natively and ring-3 SYSCALL enters ring 0".into(), Some(r))
        }
        Ok(r) => {
            let why = if !r.ring0_native() {
                format!(
                    "KVM emulates guest ring 0 ({:.0} ns per loop iteration vs {:.1} in ring 3)",
                    r.ring0_ns_per_iter, r.ring3_ns_per_iter
                )
            } else {
                "a ring-3 SYSCALL does not enter ring 0 under this host's KVM".into()
            };
            (Accel::Emu, why, Some(r))
        }
        Err(e) => (Accel::Emu, format!("KVM is not usable: {e}"), None),
    }
}

/// Boot and run the guest until it ends.
pub fn run(cfg: &VmConfig) -> Result<RunOutcome, VmError> {
    // A snapshot resumes on the backend that saved it.
    if let Some(path) = &cfg.from_snapshot {
        let started = Instant::now();
        let file = SnapshotFile::read(path)?;
        let meta: SnapshotMeta = serde_json::from_slice(file.get(b"META").unwrap_or_default())
            .map_err(|e| VmError::BadSnapshot(format!("{}: META: {e}", path.display())))?;
        let resume = Some(Resume { file, started });
        return match meta.backend.as_str() {
            "kvm" => run_kvm(cfg, "resuming a kvm snapshot".into(), None, resume),
            _ => run_emu(cfg, "resuming an emu snapshot".into(), resume),
        };
    }
    let (accel, accel_why, report) = choose_accel(cfg.accel);
    match accel {
        Accel::Kvm => run_kvm(cfg, accel_why, report, None),
        _ => run_emu(cfg, accel_why, None),
    }
}

/// An unusable snapshot, named by its path.
fn snapshot_error(cfg: &VmConfig, e: String) -> VmError {
    let path = cfg.from_snapshot.as_deref().unwrap_or(std::path::Path::new("snapshot"));
    VmError::BadSnapshot(format!("{}: {e}", path.display()))
}

/// A snapshot file read by `run`, and when reading it began (restore time includes the read).
struct Resume {
    file: SnapshotFile,
    started: Instant,
}

fn boot_plan(cfg: &VmConfig, cmdline: &str) -> Result<BootPlan, BootError> {
    plan(&BootConfig {
        vmlinux: &cfg.vmlinux,
        initrd: cfg.initrd.as_deref(),
        initrd_extra: &cfg.initrd_extra,
        cmdline,
        mem_bytes: cfg.mem_bytes,
        vcpus: cfg.vcpus,
        reserved: vec![(ring_reservation(cfg).gpa, ring_reservation(cfg).size)],
    })
}

/// The RAM set aside for the agent's ring. It is reserved whether or not the run records, so
/// `krr run` and `krr record` give the guest the same memory map (the same MemTotal, the same
/// page allocations): a run is a faithful baseline for its recording.
fn ring_reservation(cfg: &VmConfig) -> RingLocation {
    let bytes = cfg.record.as_ref().map_or(crate::recorder::DEFAULT_RING_BYTES, |r| r.ring_bytes);
    RingLocation::top_of(cfg.mem_bytes, bytes)
}

/// The kernel command line of a run: the user's, plus where the ring is when recording.
fn run_cmdline(cfg: &VmConfig) -> String {
    match &cfg.record {
        Some(r) => format!("{} {}", cfg.cmdline, ring_reservation(cfg).cmdline(r.start)),
        None => cfg.cmdline.clone(),
    }
}

/// The ring of a recording that resumes a snapshot: the one its command line names. Only a VM
/// saved by `krr record --save-snapshot` (booted with a ring, saved before the agent started)
/// can be recorded from, and only with the kernel it booted.
fn snapshot_ring(cfg: &VmConfig, meta: &SnapshotMeta) -> Result<RingLocation, VmError> {
    let Some(ring) = RingLocation::from_cmdline(&meta.cmdline) else {
        return Err(snapshot_error(
            cfg,
            "it was not saved by `krr record --save-snapshot` (its kernel command line names no ring for the \
             guest agent)"
                .into(),
        ));
    };
    let build_id = crate::boot::load_elf(&cfg.vmlinux)?.build_id;
    if build_id != meta.kernel_build_id {
        return Err(snapshot_error(
            cfg,
            format!(
                "it was saved with the kernel of build id {}, not {} ({})",
                meta.kernel_build_id,
                cfg.vmlinux.display(),
                build_id
            ),
        ));
    }
    Ok(ring)
}

/// A recording-ready snapshot must be taken before the agent starts: from then on the ring is
/// in use and the start snapshot belongs in a trace. Checked when saving one (`resumed`: when
/// recording from one).
fn check_agent_not_started(
    cfg: &VmConfig,
    ring: RingLocation,
    resumed: bool,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Result<(), VmError> {
    if !ring.agent_started(read)? {
        return Ok(());
    }
    if resumed {
        return Err(snapshot_error(
            cfg,
            "the guest agent had already started recording when it was saved".into(),
        ));
    }
    Err(VmError::RecordSetup(format!(
        "the guest agent had already started recording (krr.start={}) when the VM was to be saved; save it at \
         an earlier console line",
        cfg.record.as_ref().map_or("init", |r| r.start.name())
    )))
}

/// The recorder of a run that resumes the snapshot `meta` describes: none unless recording; else
/// the snapshot must be recording-ready (its ring, its kernel, its agent not started yet).
/// `read` reads the restored guest memory.
fn resumed_recorder(
    cfg: &VmConfig,
    meta: &SnapshotMeta,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
    cpuid: Vec<krr_trace::CpuidTable>,
) -> Result<Option<Recorder>, VmError> {
    if cfg.record.is_none() {
        return Ok(None);
    }
    let ring = snapshot_ring(cfg, meta)?;
    check_agent_not_started(cfg, ring, true, read)?;
    start_recorder(cfg, meta, ring, cpuid)
}

/// Create the trace directory and its writer for a recording of the VM `meta` describes (booted
/// or resumed), whose agent logs into `ring`. None when the run does not record, or only saves
/// a recording-ready snapshot.
fn start_recorder(
    cfg: &VmConfig,
    meta: &SnapshotMeta,
    ring: RingLocation,
    cpuid: Vec<krr_trace::CpuidTable>,
) -> Result<Option<Recorder>, VmError> {
    let Some(rc) = &cfg.record else { return Ok(None) };
    if cfg.save_snapshot.is_some() {
        return Ok(None);
    }
    let accel = if meta.backend == "kvm" { Accel::Kvm } else { Accel::Emu };
    let has_agent = crate::boot::function_symbols(&cfg.vmlinux)?.iter().any(|s| s.name == "krr_start_init");
    if !has_agent {
        return Err(VmError::RecordSetup(format!(
            "{} has no krr guest agent (it is not built from guest/patches with CONFIG_KRR=y); `krr guest build` makes one",
            cfg.vmlinux.display()
        )));
    }
    let vmlinux = std::fs::read(&cfg.vmlinux)
        .map_err(|e| VmError::RecordSetup(format!("{}: {e}", cfg.vmlinux.display())))?;
    let header = krr_trace::Header {
        producer: rc.producer.clone(),
        vm: krr_trace::VmConfig {
            accel: accel.name().into(),
            vcpus: meta.vcpus,
            mem_bytes: meta.mem_bytes,
            cmdline: meta.cmdline.clone(),
            cpu_vendor: match accel {
                Accel::Kvm => krr_emu::Vendor::host_cpuid_vendor(),
                _ => crate::emu::EMU_VENDOR.cpuid_vendor().to_string(),
            },
        },
        kernel: krr_trace::KernelInfo {
            build_id: meta.kernel_build_id.clone(),
            content_hash: crate::recorder::content_hash(&vmlinux),
            version: rc.kernel_version.clone(),
        },
        cpuid,
        snapshot: None,
        start_time_unix_ms: crate::recorder::unix_ms(),
        completion: None,
    };
    let writer = krr_trace::TraceWriter::create(&rc.dir, header, krr_trace::WriterOptions::default())
        .map_err(RecorderError::Trace)?;
    Ok(Some(
        Recorder::new(writer, ring, StartPoint::from_cmdline(&meta.cmdline))
            .with_progress(rc.progress.clone()),
    ))
}

/// Seal a recording after the run ended with `reason` (or failed).
fn seal(rec: Option<Recorder>, reason: Option<&ExitReason>) -> Result<Option<RecordSummary>, VmError> {
    let Some(rec) = rec else { return Ok(None) };
    let end = match reason {
        _ if rec.panicked() => krr_trace::EndReason::Panic,
        Some(ExitReason::Exited(_) | ExitReason::Reset) => krr_trace::EndReason::Poweroff,
        Some(ExitReason::Panic(_)) => krr_trace::EndReason::Panic,
        Some(ExitReason::Interrupted) => krr_trace::EndReason::Interrupted,
        _ => krr_trace::EndReason::Stopped,
    };
    Ok(Some(rec.finish(end)?))
}

/// Follows the console for the lines that end a run.
struct ConsoleWatch {
    start: Instant,
    seen: usize,
    to_init: Option<Duration>,
    /// `Run /init` ends the run (the backend cannot run user space).
    stop_at_init: bool,
}

impl ConsoleWatch {
    fn new(stop_at_init: bool) -> Self {
        ConsoleWatch { start: Instant::now(), seen: 0, to_init: None, stop_at_init }
    }

    /// The reason to stop, if the console has shown one since the last call.
    fn check(&mut self, console: &Console) -> Option<ExitReason> {
        let events = console.events();
        let mut end = None;
        for ev in &events[self.seen..] {
            match ev {
                ConsoleEvent::Panic(line) => end = Some(ExitReason::Panic(line.clone())),
                ConsoleEvent::RunInit => {
                    self.to_init.get_or_insert(self.start.elapsed());
                    if self.stop_at_init && end.is_none() {
                        end = Some(ExitReason::KvmCannotRunUserSpace);
                    }
                }
            }
        }
        self.seen = events.len();
        end
    }
}

/// Instructions the emulated machine runs between looks at the console and the clock.
const EMU_SLICE: u64 = 2_000_000;

fn run_emu(cfg: &VmConfig, accel_why: String, resume: Option<Resume>) -> Result<RunOutcome, VmError> {
    let start = resume.as_ref().map_or_else(Instant::now, |r| r.started);
    let console = Console::new(cfg.echo);
    let (sink, queue) = emu_irq_sink();
    let devices = Devices::new(console.clone(), sink);
    let cmdline = run_cmdline(cfg);
    let (mut vm, meta, restore_time, mut recorder) = match &resume {
        Some(r) => {
            let (vm, meta) = EmuVm::restore(&r.file, devices, queue).map_err(|e| snapshot_error(cfg, e))?;
            let rec =
                resumed_recorder(cfg, &meta, &|gpa, buf| vm.memory().read(gpa, buf), vm.cpuid_tables())?;
            if rec.is_none() {
                console.set_init_seen();
            }
            (vm, meta, Some(start.elapsed()), rec)
        }
        None => {
            let plan = boot_plan(cfg, &cmdline)?;
            let vm = EmuVm::new(cfg.mem_bytes, cfg.vcpus, &plan, devices, queue).map_err(VmError::Emu)?;
            let meta = SnapshotMeta {
                backend: "emu".into(),
                vcpus: cfg.vcpus,
                mem_bytes: cfg.mem_bytes,
                cmdline: cmdline.clone(),
                kernel_build_id: plan.kernel.build_id.clone(),
                instructions: 0,
            };
            let rec = start_recorder(cfg, &meta, ring_reservation(cfg), vm.cpuid_tables())?;
            (vm, meta, None, rec)
        }
    };
    if cfg.profile {
        vm.profile = Some(crate::emu::Profile::for_kernel(&cfg.vmlinux)?);
    }
    if let Some(seed) = cfg.emu_seed {
        vm.vary_slices(seed);
    }
    let base_instructions = vm.instructions;
    let mut instructions_before_record = 0;
    vm.devices_mut().set_command(&cfg.command);
    if cfg.save_snapshot.is_some() && cfg.snapshot_on_console.is_none() {
        vm.stop_at_snapshot_point();
    }
    let mut watch = ConsoleWatch::new(false);
    // A panic seen on the console while recording: run on (a bounded while) until the agent
    // has flushed its ring and reported the panic, so the trace holds the whole panic.
    let mut panic_pending: Option<(ExitReason, u64)> = None;
    let result: Result<ExitReason, VmError> = loop {
        let stop = vm.run_for(EMU_SLICE);
        if let (EmuStop::Agent { port, value, .. }, Some(rec)) = (&stop, recorder.as_mut()) {
            let r = match (*port, *value) {
                (PORT_CTRL, CTRL_START) => {
                    instructions_before_record = vm.instructions - base_instructions;
                    let path = rec.snapshot_path();
                    rec.console(&console)
                        .map_err(VmError::from)
                        .and_then(|()| vm.save(meta.clone()).write(&path).map_err(VmError::from))
                        .and_then(|()| rec.on_start().map_err(VmError::from))
                }
                (PORT_CTRL, CTRL_PANIC) => {
                    rec.on_panic();
                    Ok(())
                }
                (PORT_FLUSH, used) => {
                    rec.on_flush(used as u64, &|gpa, buf| vm.memory().read(gpa, buf)).map_err(Into::into)
                }
                (_, other) => Err(VmError::RecordSetup(format!(
                    "the guest agent sent an unknown control value {other}"
                ))),
            };
            if let Err(e) = r {
                break Err(e);
            }
        }
        if let Some(rec) = recorder.as_mut() {
            let r = rec
                .drain(&|gpa, buf| vm.memory().read(gpa, buf))
                .and_then(|()| rec.console(&console))
                .and_then(|()| rec.maybe_sync());
            if let Err(e) = r {
                break Err(e.into());
            }
        }
        if let Some(r) = watch.check(&console) {
            let wait_for_agent = matches!(r, ExitReason::Panic(_))
                && recorder.as_ref().is_some_and(|rec| rec.started() && !rec.panicked());
            if wait_for_agent {
                panic_pending.get_or_insert((r, vm.instructions));
            } else {
                break Ok(r);
            }
        }
        let console_point = cfg.snapshot_on_console.as_ref().is_some_and(|text| console.contains(text));
        if console_point {
            // Saved at the end of this slice (at most EMU_SLICE instructions after the line).
            break save_emu(cfg, &vm, &meta);
        }
        if let Some((r, at)) = &panic_pending {
            if recorder.as_ref().is_some_and(|rec| rec.panicked()) || vm.instructions - at > PANIC_GRACE {
                break Ok(r.clone());
            }
        }
        match stop {
            EmuStop::Budget | EmuStop::Agent { .. } => {}
            EmuStop::Exit(code) => break Ok(ExitReason::Exited(code)),
            // `panic=-1` reboots right after the panic.
            EmuStop::Reset => break Ok(panic_pending.take().map_or(ExitReason::Reset, |p| p.0)),
            EmuStop::TripleFault(msg) => {
                break Err(VmError::Vcpu { vcpu: 0, msg: format!("triple fault: {msg}") })
            }
            EmuStop::Deadlock => {
                break Err(VmError::Vcpu {
                    vcpu: 0,
                    msg: "every vCPU is halted and no timer is armed".into(),
                })
            }
            EmuStop::Failed(msg) => break Err(VmError::Emu(msg)),
            EmuStop::SnapshotPoint => break save_emu(cfg, &vm, &meta),
        }
        if cfg.timeout.is_some_and(|t| start.elapsed() > t) {
            break Ok(ExitReason::Timeout);
        }
        if cfg.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            break Ok(ExitReason::Interrupted);
        }
    };
    // Whatever happened, the trace keeps everything the guest logged and is sealed.
    if let Some(rec) = recorder.as_mut() {
        let _ = rec.drain(&|gpa, buf| vm.memory().read(gpa, buf));
        let _ = rec.console(&console);
    }
    let vcpus_at_end = if stopped_from_outside(&result) { vm.vcpu_places() } else { Vec::new() };
    let sealed = seal(recorder, result.as_ref().ok());
    let reason = result?;
    let record = sealed?;
    Ok(RunOutcome {
        reason,
        accel: Accel::Emu,
        accel_why,
        console: console.bytes(),
        elapsed: start.elapsed(),
        to_init: watch.to_init,
        instructions: vm.instructions - base_instructions,
        restore_time,
        record,
        instructions_before_record,
        profile: vm.profile.take(),
        after_init: console.init_time().map(|t| t.elapsed()),
        vcpus_at_end,
    })
}

/// Save the emulated VM to `--save-snapshot` (a recording-ready one only before the agent
/// starts); the run ends with it.
fn save_emu(cfg: &VmConfig, vm: &EmuVm, meta: &SnapshotMeta) -> Result<ExitReason, VmError> {
    if cfg.record.is_some() {
        check_agent_not_started(cfg, ring_reservation(cfg), false, &|gpa, buf| vm.memory().read(gpa, buf))?;
    }
    let path = cfg.save_snapshot.clone().unwrap_or_default();
    vm.save(meta.clone()).write(&path)?;
    Ok(snapshot_saved(path))
}

/// How a run that saved its VM to `path` ends.
fn snapshot_saved(path: PathBuf) -> ExitReason {
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    ExitReason::SnapshotSaved { path, bytes }
}

/// Instructions a recorded guest may run after its panic line before the agent reports it.
const PANIC_GRACE: u64 = 200_000_000;

fn run_kvm(
    cfg: &VmConfig,
    accel_why: String,
    report: Option<crate::probe::KvmReport>,
    resume: Option<Resume>,
) -> Result<RunOutcome, VmError> {
    if cfg.emu_seed.is_some() {
        return Err(VmError::Config(format!(
            "--emu-seed varies the emu backend's time slices; this run uses kvm ({accel_why})"
        )));
    }
    // Whether the guest's user space can run here decides what `Run /init` means; whether ring 0
    // is emulated decides whether the kernel must skip its ring-0 int3 self-test, which KVM's
    // instruction emulator cannot execute (guest/patches).
    let report = match report {
        Some(r) => Some(r),
        None => probe_kvm().ok(),
    };
    let user_space_ok = report.as_ref().is_none_or(|r| r.syscall_enters_ring0);
    let mut cmdline = run_cmdline(cfg);
    if report.as_ref().is_some_and(|r| !r.ring0_native()) {
        cmdline = format!("{cmdline} krr.no_int3_selftest");
    }
    // The guest's TSC rate, from KVM, spares the kernel its calibration against the PIT, which
    // fails or stalls when the host is slow or overcommitted (docs/nested-kvm.md); with the
    // TSC-deadline timer (KvmVm's CPUID) it calibrates no timer at all, as on the emu backend.
    // Only where KVM runs guest ring 0 natively: a KVM that emulates it (DESIGN §12) runs the
    // kernel about a thousand times slower than its TSC and no user space, and its kernel-only
    // recordings keep the clocks they were validated with.
    let tsc_khz = report.as_ref().filter(|r| r.ring0_native()).and_then(|r| r.guest_tsc_khz);
    if let Some(khz) = tsc_khz {
        cmdline = format!("{cmdline} {TSC_KHZ_PARAM}{khz}");
    }
    let start = resume.as_ref().map_or_else(Instant::now, |r| r.started);
    let console = Console::new(cfg.echo);
    let (vm, meta, saved_devices, restore_time, recorder) = match &resume {
        Some(r) => {
            let (vm, meta, devs) = restore_kvm(&r.file).map_err(|e| snapshot_error(cfg, e))?;
            let ram = vm.ram();
            let rec =
                resumed_recorder(cfg, &meta, &|gpa, buf| ram.read(gpa, buf), vm.cpuid_tables().to_vec())?;
            if rec.is_none() {
                console.set_init_seen();
            }
            (vm, meta, Some(devs), Some(start.elapsed()), rec.map(|r| Arc::new(Mutex::new(r))))
        }
        None => {
            let plan = boot_plan(cfg, &cmdline)?;
            let vm = KvmVm::new(cfg.mem_bytes, cfg.vcpus, &plan, tsc_khz.is_some())?;
            let meta = SnapshotMeta {
                backend: "kvm".into(),
                vcpus: cfg.vcpus,
                mem_bytes: cfg.mem_bytes,
                cmdline: cmdline.clone(),
                kernel_build_id: plan.kernel.build_id.clone(),
                instructions: 0,
            };
            let rec = start_recorder(cfg, &meta, ring_reservation(cfg), vm.cpuid_tables().to_vec())?;
            (vm, meta, None, None, rec.map(|r| Arc::new(Mutex::new(r))))
        }
    };
    let mut devices = Devices::new(console.clone(), irq_sink(&vm));
    if let Some(d) = &saved_devices {
        devices.set_state(d);
    }
    devices.set_command(&cfg.command);
    if cfg.save_snapshot.is_some() && cfg.snapshot_on_console.is_none() {
        devices.request_snapshot();
    }
    let devices = Arc::new(Mutex::new(devices));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let running =
        vm.start(devices.clone(), stop.clone(), tx.clone(), recorder.clone()).map_err(VmError::Threads)?;
    // Running, or stopped for good after a failed resume.
    let mut machine: Result<crate::kvm::RunningVm, StoppedVm> = Ok(running);

    let mut watch = ConsoleWatch::new(!user_space_ok);
    let mut snapshot = false;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((_, VcpuStop::Exit(code))) => break Ok(ExitReason::Exited(code)),
            Ok((_, VcpuStop::Reset | VcpuStop::Shutdown)) => break Ok(ExitReason::Reset),
            Ok((vcpu, VcpuStop::Failed(msg))) => break Err(VmError::Vcpu { vcpu, msg }),
            Ok((_, VcpuStop::SnapshotPoint)) => {
                snapshot = true;
                break Ok(ExitReason::Reset);
            }
            Ok((_, VcpuStop::AgentStart)) => {
                // Pause every vCPU, write the start snapshot into the trace, resume.
                stop.store(true, Ordering::Release);
                let running = match machine {
                    Ok(r) => r,
                    // Stopped machines leave the loop at once; this arm is never reached.
                    Err(s) => {
                        machine = Err(s);
                        break Err(VmError::RecordSetup("the VM is not running".into()));
                    }
                };
                let stopped = running.stop();
                let Some(rec) = &recorder else {
                    machine = Err(stopped);
                    break Err(VmError::RecordSetup("agent start without a recorder".into()));
                };
                let mut r = rec.lock().unwrap_or_else(|p| p.into_inner());
                let devs = devices.lock().unwrap_or_else(|p| p.into_inner()).state();
                let saved = r
                    .console(&console)
                    .map_err(VmError::from)
                    .and_then(|()| save_kvm(&stopped, meta.clone(), &devs, &r.snapshot_path()))
                    .and_then(|()| r.on_start().map_err(VmError::from));
                drop(r);
                if let Err(e) = saved {
                    machine = Err(stopped);
                    break Err(e);
                }
                stop.store(false, Ordering::Release);
                match stopped.resume(devices.clone(), stop.clone(), tx.clone(), recorder.clone()) {
                    Ok(again) => machine = Ok(again),
                    Err(e) => {
                        // The threads are gone with their vCPUs: nothing left to stop.
                        return Err(VmError::Threads(e));
                    }
                }
            }
            Ok((_, VcpuStop::Kicked)) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(ExitReason::Reset),
        }
        if let (Some(rec), Ok(running)) = (&recorder, &machine) {
            let mut r = rec.lock().unwrap_or_else(|p| p.into_inner());
            let ram = running.ram();
            if let Err(e) = r
                .drain(&|gpa, buf| ram.read(gpa, buf))
                .and_then(|()| r.console(&console))
                .and_then(|()| r.maybe_sync())
            {
                break Err(e.into());
            }
        }
        if let Some(text) = &cfg.snapshot_on_console {
            if console.contains(text) {
                snapshot = true;
                break Ok(ExitReason::Reset);
            }
        }
        if let Some(r) = watch.check(&console) {
            break Ok(r);
        }
        if cfg.timeout.is_some_and(|t| start.elapsed() > t) {
            break Ok(ExitReason::Timeout);
        }
        if cfg.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            break Ok(ExitReason::Interrupted);
        }
    };
    stop.store(true, Ordering::Release);
    let stopped = match machine {
        Ok(running) => running.stop(),
        Err(stopped) => stopped,
    };
    let mut recorder = recorder
        .and_then(|r| Arc::try_unwrap(r).ok())
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()));
    if let Some(rec) = recorder.as_mut() {
        let ram = &stopped.ram;
        let _ = rec.drain(&|gpa, buf| ram.read(gpa, buf));
        let _ = rec.console(&console);
    }
    let vcpus_at_end = if stopped_from_outside(&result) { stopped.vcpu_places() } else { Vec::new() };
    let sealed = seal(recorder, result.as_ref().ok());
    let mut reason = result?;
    let record = sealed?;
    if snapshot {
        let path = cfg.save_snapshot.clone().unwrap_or_default();
        if cfg.record.is_some() {
            let ram = &stopped.ram;
            check_agent_not_started(cfg, ring_reservation(cfg), false, &|gpa, buf| ram.read(gpa, buf))?;
        }
        let devs = devices.lock().unwrap_or_else(|p| p.into_inner()).state();
        save_kvm(&stopped, meta, &devs, &path)?;
        reason = snapshot_saved(path);
    }
    Ok(RunOutcome {
        reason,
        accel: Accel::Kvm,
        accel_why,
        console: console.bytes(),
        elapsed: start.elapsed(),
        to_init: watch.to_init,
        instructions: 0,
        restore_time,
        record,
        instructions_before_record: 0,
        profile: None,
        after_init: console.init_time().map(|t| t.elapsed()),
        vcpus_at_end,
    })
}

/// Write a stopped KVM VM to `path`.
fn save_kvm(
    vm: &StoppedVm,
    meta: SnapshotMeta,
    devices: &DevicesSnapshot,
    path: &std::path::Path,
) -> Result<(), VmError> {
    let state = vm.state()?;
    let mut f = SnapshotFile::default();
    f.add(b"META", serde_json::to_vec(&meta).unwrap_or_default());
    f.add(b"KVMS", serde_json::to_vec(&state).map_err(|e| VmError::BadSnapshot(format!("KVM state: {e}")))?);
    f.add(b"DEVS", serde_json::to_vec(devices).unwrap_or_default());
    let ram = &vm.ram;
    f.add(
        b"MEM ",
        encode_memory(ram.size() as u64 / 4096, |pfn| {
            let mut page = vec![0u8; 4096];
            ram.read(pfn * 4096, &mut page);
            page
        }),
    );
    f.write(path)?;
    Ok(())
}

/// Rebuild a KVM VM from a snapshot file.
fn restore_kvm(file: &SnapshotFile) -> Result<(KvmVm, SnapshotMeta, DevicesSnapshot), String> {
    let section =
        |tag: &[u8; 4]| file.get(tag).ok_or_else(|| format!("no {:?} section", String::from_utf8_lossy(tag)));
    let meta: SnapshotMeta = serde_json::from_slice(section(b"META")?).map_err(|e| format!("META: {e}"))?;
    if meta.backend != "kvm" {
        return Err(format!("the snapshot is of a {} VM, not a kvm one", meta.backend));
    }
    let state: KvmVmState = serde_json::from_slice(section(b"KVMS")?).map_err(|e| format!("KVMS: {e}"))?;
    let devs: DevicesSnapshot =
        serde_json::from_slice(section(b"DEVS")?).map_err(|e| format!("DEVS: {e}"))?;
    let mem = section(b"MEM ")?;
    let told_its_clocks = meta.cmdline.contains(TSC_KHZ_PARAM);
    let vm = KvmVm::restore(&state, meta.mem_bytes, told_its_clocks, |ram| {
        decode_memory(mem, meta.mem_bytes, |pfn, page| ram.write(pfn * 4096, page))
    })
    .map_err(|e| e.to_string())?;
    Ok((vm, meta, devs))
}
