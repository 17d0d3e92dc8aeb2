//! Guest-physical memory: the `GuestMemory` trait and `FlatMemory`, a copy-on-write RAM.
//!
//! The CPU never passes a range that crosses a 4 KiB boundary, so implementations can work
//! page by page. Memory also tracks which pages hold decoded code (for every CPU sharing it), so
//! a write by any CPU or device invalidates stale decodes: see [`GuestMemory::code_epoch`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// Size of a guest page.
pub const PAGE_SIZE: usize = 4096;

/// Guest-physical memory as the CPU sees it.
pub trait GuestMemory {
    /// Reads `buf.len()` bytes at `gpa` (never crossing a 4 KiB page). Returns `false` if the
    /// page is not RAM, in which case the CPU turns the access into MMIO.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Writes `data` at `gpa` (never crossing a 4 KiB page). Returns `false` if not RAM.
    /// A write to a page marked as code must bump the code epoch (see `code_epoch`).
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// Note that a CPU cached a decode of the page with frame number `pfn` (gpa >> 12).
    fn mark_code_page(&mut self, pfn: u64);
    /// Counter bumped whenever a page marked as code is written (the mark is then cleared).
    fn code_epoch(&self) -> u64;
    /// Appends to `out` the frame numbers of code pages written after `epoch`. Returns `false`
    /// if that history is no longer known: the caller must drop all its decodes.
    fn code_pages_written_since(&self, epoch: u64, out: &mut Vec<u64>) -> bool;
}

type Page = [u8; PAGE_SIZE];

/// How many code-page writes are remembered for lagging CPUs before they must flush everything.
const CODE_LOG_LEN: usize = 256;

/// RAM from GPA 0 up to `size`, in copy-on-write pages; everything above is MMIO.
///
/// Pages never written are not allocated (they read as zero). `snapshot()` clones only the page
/// table of `Arc`s, so it is cheap; the first write to a shared page copies it.
#[derive(Clone)]
pub struct FlatMemory {
    pages: Vec<Option<Arc<Page>>>,
    code_bits: Vec<u64>,
    epoch: u64,
    /// (epoch after the write, pfn) of recent code-page writes.
    code_log: VecDeque<(u64, u64)>,
    /// Epochs at or before this are unknown (after a restore or log overflow).
    history_start: u64,
}

/// A frozen copy of a `FlatMemory`'s contents.
#[derive(Clone)]
pub struct MemorySnapshot {
    pages: Vec<Option<Arc<Page>>>,
}

impl fmt::Debug for FlatMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlatMemory")
            .field("size", &self.size())
            .field("allocated_pages", &self.pages.iter().filter(|p| p.is_some()).count())
            .field("code_epoch", &self.epoch)
            .finish()
    }
}

impl fmt::Debug for MemorySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySnapshot").field("pages", &self.pages.len()).finish()
    }
}

impl MemorySnapshot {
    /// Pages of RAM (allocated or not).
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Allocated pages of `self` that `other` does not share: what keeping `self` costs beyond
    /// `other` (its page table aside).
    pub fn pages_not_shared_with(&self, other: &MemorySnapshot) -> usize {
        self.pages
            .iter()
            .enumerate()
            .filter(|(i, p)| match (p, other.pages.get(*i)) {
                (Some(a), Some(Some(b))) => !Arc::ptr_eq(a, b),
                (Some(_), _) => true,
                (None, _) => false,
            })
            .count()
    }
}

impl FlatMemory {
    /// RAM of `size` bytes (rounded up to whole pages), all zero.
    pub fn new(size: u64) -> Self {
        let npages = size.div_ceil(PAGE_SIZE as u64) as usize;
        FlatMemory {
            pages: vec![None; npages],
            code_bits: vec![0; npages.div_ceil(64)],
            epoch: 0,
            code_log: VecDeque::new(),
            history_start: 0,
        }
    }

    /// RAM size in bytes.
    pub fn size(&self) -> u64 {
        (self.pages.len() * PAGE_SIZE) as u64
    }

    /// Copies `data` into RAM at `gpa` (may span pages). Returns `false` if it does not fit.
    pub fn load(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some(end) = gpa.checked_add(data.len() as u64) else { return false };
        if end > self.size() {
            return false;
        }
        let mut off = 0usize;
        while off < data.len() {
            let a = gpa + off as u64;
            let n = (PAGE_SIZE - (a as usize % PAGE_SIZE)).min(data.len() - off);
            self.write(a, &data[off..off + n]);
            off += n;
        }
        true
    }

    /// Reads `len` bytes at `gpa` (may span pages); `None` if outside RAM.
    pub fn dump(&self, gpa: u64, len: usize) -> Option<Vec<u8>> {
        let end = gpa.checked_add(len as u64)?;
        if end > self.size() {
            return None;
        }
        let mut out = vec![0; len];
        let mut off = 0usize;
        while off < len {
            let a = gpa + off as u64;
            let n = (PAGE_SIZE - (a as usize % PAGE_SIZE)).min(len - off);
            self.read(a, &mut out[off..off + n]);
            off += n;
        }
        Some(out)
    }

    /// Cheap copy-on-write snapshot of the contents.
    pub fn snapshot(&self) -> MemorySnapshot {
        MemorySnapshot { pages: self.pages.clone() }
    }

    /// Restores contents from a snapshot (of a memory of the same size). All CPUs' decode
    /// caches notice through the code epoch and drop everything.
    pub fn restore(&mut self, snap: &MemorySnapshot) {
        self.pages.clone_from(&snap.pages);
        self.pages.resize(snap.pages.len(), None);
        self.code_bits = vec![0; self.pages.len().div_ceil(64)];
        self.epoch += 1;
        self.history_start = self.epoch;
        self.code_log.clear();
    }

    fn page_index(&self, gpa: u64, len: usize) -> Option<(usize, usize)> {
        let idx = usize::try_from(gpa / PAGE_SIZE as u64).ok()?;
        let off = (gpa % PAGE_SIZE as u64) as usize;
        if idx >= self.pages.len() || off + len > PAGE_SIZE {
            return None;
        }
        Some((idx, off))
    }
}

/// `dst.copy_from_slice(src)` with the usual operand sizes as inline moves, not `memcpy` calls.
#[inline(always)]
fn copy(dst: &mut [u8], src: &[u8]) {
    match dst.len() {
        8 => dst.copy_from_slice(&src[..8]),
        4 => dst.copy_from_slice(&src[..4]),
        2 => dst.copy_from_slice(&src[..2]),
        1 => dst.copy_from_slice(&src[..1]),
        _ => dst.copy_from_slice(src),
    }
}

impl GuestMemory for FlatMemory {
    #[inline]
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some((idx, off)) = self.page_index(gpa, buf.len()) else { return false };
        match &self.pages[idx] {
            Some(p) => copy(buf, &p[off..off + buf.len()]),
            None => buf.fill(0),
        }
        true
    }

    #[inline]
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some((idx, off)) = self.page_index(gpa, data.len()) else { return false };
        let bit = 1u64 << (idx % 64);
        if self.code_bits[idx / 64] & bit != 0 {
            self.code_bits[idx / 64] &= !bit;
            self.epoch += 1;
            self.code_log.push_back((self.epoch, idx as u64));
            if self.code_log.len() > CODE_LOG_LEN {
                if let Some((e, _)) = self.code_log.pop_front() {
                    self.history_start = e;
                }
            }
        }
        let page = self.pages[idx].get_or_insert_with(|| Arc::new([0; PAGE_SIZE]));
        copy(&mut Arc::make_mut(page)[off..off + data.len()], data);
        true
    }

    fn mark_code_page(&mut self, pfn: u64) {
        if let Ok(idx) = usize::try_from(pfn) {
            if let Some(w) = self.code_bits.get_mut(idx / 64) {
                *w |= 1 << (idx % 64);
            }
        }
    }

    #[inline]
    fn code_epoch(&self) -> u64 {
        self.epoch
    }

    fn code_pages_written_since(&self, epoch: u64, out: &mut Vec<u64>) -> bool {
        if epoch < self.history_start {
            return false;
        }
        out.extend(self.code_log.iter().filter(|(e, _)| *e > epoch).map(|(_, p)| *p));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_and_bounds() {
        let mut m = FlatMemory::new(3 * 4096);
        let mut b = [0u8; 4];
        assert!(m.read(0x1000, &mut b));
        assert_eq!(b, [0; 4]);
        assert!(m.write(0x1ffc, &[1, 2, 3, 4]));
        assert!(m.read(0x1ffc, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(!m.read(0x3000, &mut b), "beyond RAM is MMIO");
        assert!(!m.write(0x1ffe, &[1, 2, 3, 4]), "crossing a page is refused");
        assert!(m.load(0xffe, &[9, 8, 7, 6]));
        assert_eq!(m.dump(0xffe, 4).unwrap(), vec![9, 8, 7, 6]);
        assert!(!m.load(0x2fff, &[1, 2]));
    }

    #[test]
    fn snapshot_is_copy_on_write() {
        let mut m = FlatMemory::new(2 * 4096);
        m.write(0x10, &[0xaa]);
        let snap = m.snapshot();
        m.write(0x10, &[0xbb]);
        m.write(0x1010, &[0xcc]);
        assert_eq!(m.dump(0x10, 1).unwrap(), vec![0xbb]);
        assert_eq!(m.snapshot().pages_not_shared_with(&snap), 2, "one copied, one new");
        assert_eq!(snap.pages_not_shared_with(&m.snapshot()), 1);
        m.restore(&snap);
        assert_eq!(m.dump(0x10, 1).unwrap(), vec![0xaa]);
        assert_eq!(m.dump(0x1010, 1).unwrap(), vec![0]);
        assert_eq!(m.snapshot().pages_not_shared_with(&snap), 0);
        assert_eq!(snap.pages(), 2);
    }

    #[test]
    fn code_page_writes_bump_epoch() {
        let mut m = FlatMemory::new(4 * 4096);
        m.write(0x1000, &[1]);
        assert_eq!(m.code_epoch(), 0, "unmarked page");
        m.mark_code_page(1);
        m.write(0x1004, &[1]);
        assert_eq!(m.code_epoch(), 1);
        m.write(0x1008, &[1]);
        assert_eq!(m.code_epoch(), 1, "mark cleared after first write");
        let mut v = Vec::new();
        assert!(m.code_pages_written_since(0, &mut v));
        assert_eq!(v, vec![1]);
        let snap = m.snapshot();
        m.restore(&snap);
        v.clear();
        assert!(!m.code_pages_written_since(1, &mut v), "restore forgets history");
    }
}
