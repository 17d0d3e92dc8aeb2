//! The VM snapshot file: a whole machine at one instant, versioned and checksummed.
//!
//! Layout: magic `KRRSNAP\0`, format version (u32 LE), four zero bytes, then sections back to
//! back, each a 4-byte tag, a u64 LE length, a CRC32 (u32 LE) of the data, and the data:
//! - `META`: JSON [`SnapshotMeta`] (backend, vCPUs, memory size, kernel command line and build-id);
//! - `C000`, `C001`, ...: one vCPU's architectural state ([`encode_cpu`]);
//! - `DEVS`: JSON of the backend's device state (interrupt controllers, timers, UART, ...);
//! - `MEM `: zstd-compressed RAM without its zero pages: (page frame number u32 LE, 4096 bytes)*.
//!
//! The recorder stores its start snapshot in this format (DESIGN §6).

use std::io::{Read, Write};
use std::path::Path;

use krr_emu::{Cpu, DescriptorTable, FpuState, Msrs, Segment};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"KRRSNAP\0";
/// Bumped on any change an older reader would misread.
pub const SNAPSHOT_VERSION: u32 = 1;
const PAGE: usize = 4096;
/// Largest section a reader accepts (RAM is capped at 3 GiB).
const MAX_SECTION: u64 = 4 << 30;

/// What a snapshot holds, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub backend: String,
    pub vcpus: u32,
    pub mem_bytes: u64,
    pub cmdline: String,
    pub kernel_build_id: String,
    /// Guest instructions executed before the snapshot (emu).
    pub instructions: u64,
}

/// Errors reading or writing a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {err}", path.display())]
    Io { path: std::path::PathBuf, err: std::io::Error },
    #[error("{}: not a krr snapshot", path.display())]
    BadMagic { path: std::path::PathBuf },
    #[error("{}: snapshot format version {found} is not supported (this krr reads version {SNAPSHOT_VERSION})", path.display())]
    Version { path: std::path::PathBuf, found: u32 },
    #[error("{}: corrupt snapshot: {reason}", path.display())]
    Corrupt { path: std::path::PathBuf, reason: String },
    #[error("snapshot does not fit this VM: {0}")]
    Mismatch(String),
}

/// A snapshot as sections in memory.
#[derive(Debug, Default)]
pub struct SnapshotFile {
    pub sections: Vec<([u8; 4], Vec<u8>)>,
}

impl SnapshotFile {
    pub fn add(&mut self, tag: &[u8; 4], data: Vec<u8>) {
        self.sections.push((*tag, data));
    }

    pub fn get(&self, tag: &[u8; 4]) -> Option<&[u8]> {
        self.sections.iter().find(|(t, _)| t == tag).map(|(_, d)| d.as_slice())
    }

    /// Write to `path` (through a temporary file and a rename: a crash never leaves a torn file).
    pub fn write(&self, path: &Path) -> Result<(), SnapshotError> {
        let io = |e| SnapshotError::Io { path: path.to_owned(), err: e };
        let tmp = path.with_extension("partial");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        f.write_all(MAGIC).map_err(io)?;
        f.write_all(&SNAPSHOT_VERSION.to_le_bytes()).map_err(io)?;
        f.write_all(&[0u8; 4]).map_err(io)?;
        for (tag, data) in &self.sections {
            f.write_all(tag).map_err(io)?;
            f.write_all(&(data.len() as u64).to_le_bytes()).map_err(io)?;
            f.write_all(&crc32fast::hash(data).to_le_bytes()).map_err(io)?;
            f.write_all(data).map_err(io)?;
        }
        let f = f.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Read and check `path`.
    pub fn read(path: &Path) -> Result<Self, SnapshotError> {
        let f = std::fs::File::open(path).map_err(|e| SnapshotError::Io { path: path.to_owned(), err: e })?;
        Self::from_reader(std::io::BufReader::new(f), path)
    }

    /// Parse and check a snapshot from `f`; `path` names it in errors.
    pub fn from_reader(mut f: impl Read, path: &Path) -> Result<Self, SnapshotError> {
        let io = |e| SnapshotError::Io { path: path.to_owned(), err: e };
        let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_owned(), reason };
        let mut head = [0u8; 16];
        f.read_exact(&mut head).map_err(|_| SnapshotError::BadMagic { path: path.to_owned() })?;
        if &head[..8] != MAGIC {
            return Err(SnapshotError::BadMagic { path: path.to_owned() });
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { path: path.to_owned(), found: version });
        }
        let mut out = SnapshotFile::default();
        loop {
            let mut sh = [0u8; 16];
            match f.read(&mut sh[..1]).map_err(io)? {
                0 => break,
                _ => f.read_exact(&mut sh[1..]).map_err(|_| corrupt("truncated section header".into()))?,
            }
            let tag = [sh[0], sh[1], sh[2], sh[3]];
            let len = u64::from_le_bytes(sh[4..12].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes([sh[12], sh[13], sh[14], sh[15]]);
            if len > MAX_SECTION {
                return Err(corrupt(format!(
                    "section {:?} claims {len} bytes",
                    String::from_utf8_lossy(&tag)
                )));
            }
            let mut data = Vec::new();
            (&mut f).take(len).read_to_end(&mut data).map_err(io)?;
            if data.len() as u64 != len {
                return Err(corrupt(format!("section {:?} is truncated", String::from_utf8_lossy(&tag))));
            }
            if crc32fast::hash(&data) != crc {
                return Err(corrupt(format!(
                    "section {:?} checksum mismatch",
                    String::from_utf8_lossy(&tag)
                )));
            }
            out.sections.push((tag, data));
        }
        Ok(out)
    }
}

/// RAM without zero pages, compressed. `read_page(pfn)` returns a page.
pub fn encode_memory(pages: u64, mut read_page: impl FnMut(u64) -> Vec<u8>) -> Vec<u8> {
    let mut raw = Vec::new();
    for pfn in 0..pages {
        let p = read_page(pfn);
        if p.iter().any(|b| *b != 0) {
            raw.extend_from_slice(&(pfn as u32).to_le_bytes());
            raw.extend_from_slice(&p);
        }
    }
    zstd::bulk::compress(&raw, 3).unwrap_or_default()
}

/// Inverse of [`encode_memory`]: calls `write_page(pfn, bytes)` for every stored page.
pub fn decode_memory(
    data: &[u8],
    max_bytes: u64,
    mut write_page: impl FnMut(u64, &[u8]) -> bool,
) -> Result<(), String> {
    let cap = (max_bytes / PAGE as u64) as usize * (PAGE + 4);
    let raw = zstd::bulk::decompress(data, cap).map_err(|e| format!("memory: {e}"))?;
    if raw.len() % (PAGE + 4) != 0 {
        return Err("memory section has a partial page".into());
    }
    for rec in raw.chunks(PAGE + 4) {
        let pfn = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as u64;
        if !write_page(pfn, &rec[4..]) {
            return Err(format!("page {pfn:#x} lies outside guest memory"));
        }
    }
    Ok(())
}

/// Little-endian field writer for CPU state.
struct W(Vec<u8>);

impl W {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn seg(&mut self, s: &Segment) {
        self.u64(s.selector as u64);
        self.u64(s.base);
        self.u64(s.limit as u64);
        let flags = s.typ as u64
            | (s.s as u64) << 8
            | (s.dpl as u64) << 9
            | (s.present as u64) << 11
            | (s.avl as u64) << 12
            | (s.l as u64) << 13
            | (s.db as u64) << 14
            | (s.g as u64) << 15
            | (s.unusable as u64) << 16;
        self.u64(flags);
    }
}

struct R<'a>(&'a [u8]);

impl R<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        if self.0.len() < 8 {
            return Err("CPU state is truncated".into());
        }
        let (a, b) = self.0.split_at(8);
        self.0 = b;
        Ok(u64::from_le_bytes(a.try_into().unwrap_or_default()))
    }
    fn seg(&mut self) -> Result<Segment, String> {
        let selector = self.u64()? as u16;
        let base = self.u64()?;
        let limit = self.u64()? as u32;
        let f = self.u64()?;
        Ok(Segment {
            selector,
            base,
            limit,
            typ: (f & 0xf) as u8,
            s: f >> 8 & 1 != 0,
            dpl: (f >> 9 & 3) as u8,
            present: f >> 11 & 1 != 0,
            avl: f >> 12 & 1 != 0,
            l: f >> 13 & 1 != 0,
            db: f >> 14 & 1 != 0,
            g: f >> 15 & 1 != 0,
            unusable: f >> 16 & 1 != 0,
        })
    }
}

fn msrs_fields(m: &mut Msrs) -> [&mut u64; 12] {
    [
        &mut m.star,
        &mut m.lstar,
        &mut m.cstar,
        &mut m.sfmask,
        &mut m.kernel_gs_base,
        &mut m.tsc_aux,
        &mut m.sysenter_cs,
        &mut m.sysenter_esp,
        &mut m.sysenter_eip,
        &mut m.pat,
        &mut m.apic_base,
        &mut m.misc_enable,
    ]
}

/// A vCPU's architectural state (everything but caches: the TLB and decode cache start empty).
pub fn encode_cpu(c: &Cpu) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(1024));
    for g in c.gpr {
        w.u64(g);
    }
    for v in [c.rip, c.rflags, c.cr0, c.cr2, c.cr3, c.cr4, c.cr8, c.efer, c.icount] {
        w.u64(v);
    }
    for s in c.seg.iter().chain([&c.ldtr, &c.tr]) {
        w.seg(s);
    }
    for t in [&c.gdtr, &c.idtr] {
        w.u64(t.base);
        w.u64(t.limit as u64);
    }
    let mut msrs = c.msrs;
    for m in msrs_fields(&mut msrs) {
        w.u64(*m);
    }
    for d in c.dr {
        w.u64(d);
    }
    let f = &c.fpu;
    for v in [f.fcw as u64, f.fsw as u64, f.ftw as u64, f.fop as u64, f.fip, f.fdp, f.mxcsr as u64] {
        w.u64(v);
    }
    for st in &f.st {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(st);
        w.0.extend_from_slice(&b);
    }
    for x in f.xmm {
        w.0.extend_from_slice(&x.to_le_bytes());
    }
    let flags = c.halted as u64
        | (c.interrupt_shadow as u64) << 1
        | (c.pending_db as u64) << 2
        | (c.nmi_pending as u64) << 3
        | (c.nmi_blocked as u64) << 4;
    w.u64(flags);
    w.0
}

/// Restore what [`encode_cpu`] wrote into `c` (whose features and caches are kept).
pub fn decode_cpu(c: &mut Cpu, data: &[u8]) -> Result<(), String> {
    let mut r = R(data);
    for g in c.gpr.iter_mut() {
        *g = r.u64()?;
    }
    for v in [
        &mut c.rip,
        &mut c.rflags,
        &mut c.cr0,
        &mut c.cr2,
        &mut c.cr3,
        &mut c.cr4,
        &mut c.cr8,
        &mut c.efer,
        &mut c.icount,
    ] {
        *v = r.u64()?;
    }
    for s in c.seg.iter_mut() {
        *s = r.seg()?;
    }
    c.ldtr = r.seg()?;
    c.tr = r.seg()?;
    for t in [&mut c.gdtr, &mut c.idtr] {
        *t = DescriptorTable { base: r.u64()?, limit: r.u64()? as u16 };
    }
    for m in msrs_fields(&mut c.msrs) {
        *m = r.u64()?;
    }
    for d in c.dr.iter_mut() {
        *d = r.u64()?;
    }
    let f: &mut FpuState = &mut c.fpu;
    f.fcw = r.u64()? as u16;
    f.fsw = r.u64()? as u16;
    f.ftw = r.u64()? as u8;
    f.fop = r.u64()? as u16;
    f.fip = r.u64()?;
    f.fdp = r.u64()?;
    f.mxcsr = r.u64()? as u32;
    for st in f.st.iter_mut() {
        let lo = r.u64()?.to_le_bytes();
        let hi = r.u64()?.to_le_bytes();
        st[..8].copy_from_slice(&lo);
        st[8..].copy_from_slice(&hi[..2]);
    }
    for x in f.xmm.iter_mut() {
        let lo = r.u64()? as u128;
        let hi = r.u64()? as u128;
        *x = lo | hi << 64;
    }
    let flags = r.u64()?;
    c.halted = flags & 1 != 0;
    c.interrupt_shadow = flags & 2 != 0;
    c.pending_db = flags & 4 != 0;
    c.nmi_pending = flags & 8 != 0;
    c.nmi_blocked = flags & 16 != 0;
    if !r.0.is_empty() {
        return Err("CPU state has trailing bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_roundtrip() {
        let mut c = Cpu::new_long_mode(0x1000);
        c.gpr[3] = 0xdead_beef;
        c.rip = 0xffff_ffff_8100_0000;
        c.msrs.lstar = 0x1234;
        c.fpu.xmm[5] = u128::MAX - 7;
        c.fpu.st[2] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        c.tr.base = 0x5000;
        c.halted = true;
        c.icount = 99;
        let data = encode_cpu(&c);
        let mut d = Cpu::new();
        decode_cpu(&mut d, &data).unwrap();
        assert_eq!(encode_cpu(&d), data);
        assert_eq!(d.gpr[3], 0xdead_beef);
        assert_eq!(d.fpu.st[2], c.fpu.st[2]);
        assert!(decode_cpu(&mut d, &data[..data.len() - 1]).is_err());
    }

    #[test]
    fn file_roundtrip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let mut f = SnapshotFile::default();
        f.add(b"META", b"{}".to_vec());
        f.add(b"MEM ", encode_memory(4, |pfn| vec![if pfn == 2 { 7 } else { 0 }; PAGE]));
        f.write(&p).unwrap();
        let g = SnapshotFile::read(&p).unwrap();
        assert_eq!(g.get(b"META"), Some(&b"{}"[..]));
        let mut seen = Vec::new();
        decode_memory(g.get(b"MEM ").unwrap(), 4 * PAGE as u64, |pfn, b| {
            seen.push((pfn, b[0]));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(2, 7)]);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(SnapshotFile::read(&p), Err(SnapshotError::Corrupt { .. })));
        std::fs::write(&p, b"garbage").unwrap();
        assert!(matches!(SnapshotFile::read(&p), Err(SnapshotError::BadMagic { .. })));
    }
}
