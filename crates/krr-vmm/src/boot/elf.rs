//! Loading the uncompressed `vmlinux`: its PT_LOAD segments at their physical addresses, its
//! entry point, and its GNU build-id (traces name the kernel by it).

use std::path::Path;

use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, Object};

use super::BootError;

/// One loadable segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub paddr: u64,
    /// File bytes followed by zeros up to the segment's memory size.
    pub data: Vec<u8>,
}

/// A parsed vmlinux.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// Physical entry address (`phys_startup_64`).
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// First physical address above every segment.
    pub end: u64,
    /// GNU build-id, hex; empty if the image has none.
    pub build_id: String,
}

/// Parse `path` as an x86-64 ELF vmlinux.
pub fn load_elf(path: &Path) -> Result<KernelImage, BootError> {
    let bad = |reason: String| BootError::BadKernel { path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|e| BootError::Io { path: path.to_owned(), err: e })?;
    let header = FileHeader64::<Endianness>::parse(&*bytes).map_err(|e| bad(format!("{e}")))?;
    let endian = header.endian().map_err(|e| bad(format!("{e}")))?;
    if header.e_machine(endian) != object::elf::EM_X86_64 {
        return Err(bad("not an x86-64 ELF file".into()));
    }
    let mut segments = Vec::new();
    let mut end = 0u64;
    for ph in header.program_headers(endian, &*bytes).map_err(|e| bad(format!("{e}")))? {
        if ph.p_type(endian) != PT_LOAD {
            continue;
        }
        let paddr = ph.p_paddr(endian);
        let memsz = ph.p_memsz(endian);
        let mut data = ph.data(endian, &*bytes).map_err(|_| bad("segment outside the file".into()))?.to_vec();
        if memsz < data.len() as u64 || memsz > 1 << 30 {
            return Err(bad(format!("segment at {paddr:#x} has a bad size")));
        }
        data.resize(memsz as usize, 0);
        end = end.max(paddr + memsz);
        segments.push(Segment { paddr, data });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segments".into()));
    }
    let entry = header.e_entry(endian);
    if !segments.iter().any(|s| (s.paddr..s.paddr + s.data.len() as u64).contains(&entry)) {
        return Err(bad(format!(
            "entry {entry:#x} is not a physical address inside the image (is this a bzImage? krr boots vmlinux)"
        )));
    }
    let build_id = object::File::parse(&*bytes)
        .ok()
        .and_then(|f| f.build_id().ok().flatten().map(|id| id.iter().map(|b| format!("{b:02x}")).collect()))
        .unwrap_or_default();
    Ok(KernelImage { entry, segments, end: (end + 0xfff) & !0xfff, build_id })
}

/// A function symbol of a vmlinux: name, start address, size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

/// The function symbols of the ELF file at `path` (for profiles and the debugger).
pub fn function_symbols(path: &Path) -> Result<Vec<FunctionSymbol>, BootError> {
    symbols(path, true)
}

/// The symbols of the ELF file at `path`: functions only, or every named symbol (data too, e.g.
/// per-CPU variables, whose "address" is their offset in the per-CPU area).
pub fn symbols(path: &Path, functions_only: bool) -> Result<Vec<FunctionSymbol>, BootError> {
    use object::{ObjectSymbol, SymbolKind};
    let bad = |reason: String| BootError::BadKernel { path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|e| BootError::Io { path: path.to_owned(), err: e })?;
    let file = object::File::parse(&*bytes).map_err(|e| bad(format!("{e}")))?;
    Ok(file
        .symbols()
        .filter(|s| !functions_only || s.kind() == SymbolKind::Text)
        .filter_map(|s| {
            Some(FunctionSymbol { name: s.name().ok()?.to_string(), addr: s.address(), size: s.size() })
        })
        .collect())
}

/// The addresses in the executable sections of the ELF file at `path` where the bytes `pattern`
/// start (e.g. an instruction's encoding; a match inside another instruction is harmless to a
/// caller that only asks about addresses execution reaches).
pub fn code_matches(path: &Path, pattern: &[u8]) -> Result<Vec<u64>, BootError> {
    use object::{ObjectSection, SectionKind};
    let bad = |reason: String| BootError::BadKernel { path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|e| BootError::Io { path: path.to_owned(), err: e })?;
    let file = object::File::parse(&*bytes).map_err(|e| bad(format!("{e}")))?;
    let mut at = Vec::new();
    if pattern.is_empty() {
        return Ok(at);
    }
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let data = section.data().map_err(|e| bad(format!("{e}")))?;
        at.extend(
            data.windows(pattern.len())
                .enumerate()
                .filter(|(_, w)| *w == pattern)
                .map(|(i, _)| section.address() + i as u64),
        );
    }
    at.sort_unstable();
    Ok(at)
}
