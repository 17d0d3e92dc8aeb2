//! Opening a trace for replay: its events, console, the kernel it belongs to, and its start
//! snapshot as an emulated machine.

use std::path::{Path, PathBuf};

use krr_emu::{Cpu, FlatMemory, GuestMemory, Vendor};
use krr_trace::{Header, TraceReader};
use krr_vmm::snapshot::{decode_cpu, decode_memory, SnapshotFile, SnapshotMeta};

use crate::{Events, ReplayError};

/// Everything replay needs from a trace directory.
#[derive(Debug)]
pub struct Trace {
    pub dir: PathBuf,
    pub header: Header,
    /// The events before any damage, read a block at a time.
    pub events: Events,
    /// The console bytes recorded from the start.
    pub console: Vec<u8>,
    /// Whether the recorder sealed the trace.
    pub complete: bool,
    /// Where the valid prefix ends, when the events are damaged or the recorder was killed.
    pub damage: Option<String>,
}

/// Read the header and the console of the trace in `dir`, and index its intact events.
pub fn load_trace(dir: &Path) -> Result<Trace, ReplayError> {
    let r = TraceReader::open(dir)?;
    let header = r.header().clone();
    let complete = r.is_complete();
    let console = r.console()?;
    if header.snapshot.is_none() {
        return Err(ReplayError::NoSnapshot(dir.to_owned()));
    }
    let (events, damage) = Events::open(r.into_stream());
    Ok(Trace { dir: dir.to_owned(), header, events, console, complete, damage })
}

/// Check that `vmlinux` is the kernel the trace was recorded with.
pub fn check_kernel(header: &Header, vmlinux: &Path) -> Result<(), ReplayError> {
    let image = krr_vmm::boot::load_elf(vmlinux).map_err(|e| ReplayError::Kernel(e.to_string()))?;
    if image.build_id != header.kernel.build_id {
        return Err(ReplayError::WrongKernel {
            vmlinux: vmlinux.to_owned(),
            found: image.build_id,
            wanted: header.kernel.build_id.clone(),
        });
    }
    if !header.kernel.content_hash.is_empty() {
        let bytes =
            std::fs::read(vmlinux).map_err(|e| ReplayError::Kernel(format!("{}: {e}", vmlinux.display())))?;
        let hash = krr_vmm::recorder::content_hash(&bytes);
        if hash != header.kernel.content_hash {
            return Err(ReplayError::WrongKernel {
                vmlinux: vmlinux.to_owned(),
                found: hash,
                wanted: header.kernel.content_hash.clone(),
            });
        }
    }
    Ok(())
}

/// The vendor profile krr-emu replays `header`'s trace with: the recorded CPU's vendor, or
/// `choice` (`--cpu-profile`). A vendor krr-emu has no profile for needs a choice.
pub fn cpu_profile(header: &Header, choice: Option<Vendor>) -> Result<Vendor, ReplayError> {
    match (choice, Vendor::from_cpuid_vendor(&header.vm.cpu_vendor)) {
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(ReplayError::UnknownVendor(header.vm.cpu_vendor.clone())),
    }
}

/// The start snapshot as emulated vCPUs (vCPU i at index i) and their memory; the vCPUs give
/// the answers of the recorded CPU's vendor, or of `profile` when given ([`cpu_profile`]).
pub fn load_snapshot(
    trace: &Trace,
    profile: Option<Vendor>,
) -> Result<(Vec<Cpu>, FlatMemory, SnapshotMeta), ReplayError> {
    let vendor = cpu_profile(&trace.header, profile)?;
    let sref = trace.header.snapshot.as_ref().ok_or_else(|| ReplayError::NoSnapshot(trace.dir.clone()))?;
    let path = trace.dir.join(&sref.file);
    let bytes =
        std::fs::read(&path).map_err(|e| ReplayError::Snapshot(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 != sref.bytes || crc32fast::hash(&bytes) != sref.crc32 {
        return Err(ReplayError::Snapshot(format!(
            "{}: does not match the trace header (size or CRC32 differ: the snapshot is damaged or not this trace's)",
            path.display()
        )));
    }
    let file =
        SnapshotFile::from_reader(&bytes[..], &path).map_err(|e| ReplayError::Snapshot(e.to_string()))?;
    let section = |tag: &[u8; 4]| {
        file.get(tag).ok_or_else(|| {
            ReplayError::Snapshot(format!(
                "{}: no {:?} section",
                path.display(),
                String::from_utf8_lossy(tag)
            ))
        })
    };
    let meta: SnapshotMeta = serde_json::from_slice(section(b"META")?)
        .map_err(|e| ReplayError::Snapshot(format!("{}: META: {e}", path.display())))?;
    if !(1..=8).contains(&meta.vcpus) {
        return Err(ReplayError::Snapshot(format!(
            "{}: {} vCPUs (krr records 1 to 8)",
            path.display(),
            meta.vcpus
        )));
    }
    let mut mem = FlatMemory::new(meta.mem_bytes);
    decode_memory(section(b"MEM ")?, meta.mem_bytes, |pfn, page| mem.load(pfn * 4096, page))
        .map_err(|e| ReplayError::Snapshot(format!("{}: {e}", path.display())))?;
    let cpus = match meta.backend.as_str() {
        "emu" => (0..meta.vcpus as usize)
            .map(|i| {
                let mut cpu = Cpu::new();
                // The emu backend's CPU (crates/krr-vmm/src/emu).
                cpu.features = krr_vmm::emu::emu_features();
                decode_cpu(&mut cpu, section(&krr_vmm::emu::cpu_tag(i))?)
                    .map_err(|e| ReplayError::Snapshot(format!("{}: vCPU {i}: {e}", path.display())))?;
                Ok(cpu)
            })
            .collect::<Result<Vec<_>, ReplayError>>()?,
        "kvm" => {
            let state: krr_vmm::kvm::KvmVmState = serde_json::from_slice(section(b"KVMS")?)
                .map_err(|e| ReplayError::Snapshot(format!("{}: KVMS: {e}", path.display())))?;
            (0..state.vcpus.len())
                .map(|i| crate::kvm_state::cpu_from_kvm(&state, i))
                .collect::<Result<_, _>>()?
        }
        other => return Err(ReplayError::Unsupported(format!("a snapshot of a {other} VM"))),
    };
    let cpus = cpus
        .into_iter()
        .map(|mut c: Cpu| {
            c.features.vendor = vendor;
            c
        })
        .collect();
    Ok((cpus, mem, meta))
}

/// Read guest-virtual memory through the page tables at `cr3` (4-level; 4 KiB, 2 MiB and 1 GiB
/// pages). `None` if a page on the way is not present.
pub fn virt_to_phys(mem: &FlatMemory, cr3: u64, va: u64) -> Option<u64> {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut table = cr3 & ADDR;
    for level in (0..4).rev() {
        let idx = (va >> (12 + 9 * level)) & 0x1ff;
        let mut e = [0u8; 8];
        if !mem.read(table + idx * 8, &mut e) {
            return None;
        }
        let e = u64::from_le_bytes(e);
        if e & 1 == 0 {
            return None;
        }
        if level == 0 || (level < 3 && e & 0x80 != 0) {
            let size = 1u64 << (12 + 9 * level);
            return Some((e & ADDR & !(size - 1)) | (va & (size - 1)));
        }
        table = e & ADDR;
    }
    None
}
