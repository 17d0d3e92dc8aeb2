//! Guest RAM for KVM: one anonymous mapping registered as memory slot 0.

use std::ptr::NonNull;

/// Anonymous, private, lazily-backed guest RAM.
#[derive(Debug)]
pub struct GuestRam {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this struct for its lifetime; concurrent access
// from vCPU threads goes through KVM (which has the same aliasing as hardware) or through
// `write`/`read` below, which copy bytes and take `&mut self`/`&self` like any buffer.
unsafe impl Send for GuestRam {}
// SAFETY: see `Send`; shared references only read.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Map `size` bytes (a multiple of 4 KiB).
    pub fn new(size: usize) -> std::io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice; the result
        // is checked before use and owned (unmapped in Drop).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(GuestRam { ptr, size })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Host address of guest-physical 0, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Copy `data` to guest-physical `gpa`; `false` if it does not fit in RAM.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some(end) = gpa.checked_add(data.len() as u64) else { return false };
        if end > self.size as u64 {
            return false;
        }
        // SAFETY: `gpa..end` lies inside the mapping (checked above) and `data` cannot overlap
        // it (it is a Rust slice we do not hand out).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(gpa as usize), data.len())
        };
        true
    }

    /// Copy guest-physical `gpa..gpa+buf.len()` out; `false` if outside RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(end) = gpa.checked_add(buf.len() as u64) else { return false };
        if end > self.size as u64 {
            return false;
        }
        // SAFETY: the source range lies inside the mapping (checked above); `buf` is a distinct
        // Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(gpa as usize), buf.as_mut_ptr(), buf.len())
        };
        true
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`, after KVM (owned by the VM,
        // dropped first by field order in `KvmVm`) no longer uses it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let mut r = GuestRam::new(8192).unwrap();
        assert!(r.write(4090, b"abcdef"));
        let mut b = [0u8; 6];
        assert!(r.read(4090, &mut b));
        assert_eq!(&b, b"abcdef");
        assert!(!r.write(8190, b"abc"));
        assert!(!r.read(u64::MAX, &mut b));
    }
}
