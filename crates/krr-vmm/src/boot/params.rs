//! `struct boot_params` (the zero page) and the e820 memory map.

use crate::layout::*;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub typ: u32,
}

/// The memory map for `mem` bytes of RAM, with `reserved` (start, size) ranges carved out of RAM.
pub fn e820_map(mem: u64, reserved: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: LOW_RAM_END, typ: E820_RAM },
        E820Entry { addr: LOW_RAM_END, size: 0xa0000 - LOW_RAM_END, typ: E820_RESERVED },
        E820Entry { addr: MPTABLE_ADDR, size: BIOS_END - MPTABLE_ADDR, typ: E820_RESERVED },
    ];
    let mut ram = vec![(BIOS_END, mem)];
    let mut res: Vec<(u64, u64)> = reserved.to_vec();
    res.sort();
    for &(start, size) in &res {
        let end = start + size;
        ram = ram
            .into_iter()
            .flat_map(|(a, b)| {
                if end <= a || start >= b {
                    vec![(a, b)]
                } else {
                    [(a, start.max(a)), (end.min(b), b)].into_iter().filter(|(x, y)| x < y).collect()
                }
            })
            .collect();
    }
    let mut all: Vec<E820Entry> =
        ram.into_iter().map(|(a, b)| E820Entry { addr: a, size: b - a, typ: E820_RAM }).collect();
    all.extend(res.iter().map(|&(a, s)| E820Entry { addr: a, size: s, typ: E820_RESERVED }));
    all.sort_by_key(|e| e.addr);
    map.extend(all);
    map
}

fn put<const N: usize>(zp: &mut [u8], off: usize, v: [u8; N]) {
    zp[off..off + N].copy_from_slice(&v);
}

/// The zero page for the 64-bit boot protocol.
pub fn boot_params(e820: &[E820Entry], cmdline_len: usize, initrd: Option<(u64, u64)>) -> Vec<u8> {
    let mut zp = vec![0u8; 4096];
    zp[0x1e8] = e820.len() as u8;
    put(&mut zp, 0x1fe, 0xaa55u16.to_le_bytes()); // boot_flag
    put(&mut zp, 0x202, *b"HdrS"); // header
    put(&mut zp, 0x206, 0x020fu16.to_le_bytes()); // boot protocol 2.15
    zp[0x210] = 0xff; // type_of_loader: undefined loader
    zp[0x211] = 0x01 | 0x80; // loadflags: LOADED_HIGH | CAN_USE_HEAP
    if let Some((addr, size)) = initrd {
        put(&mut zp, 0x218, (addr as u32).to_le_bytes());
        put(&mut zp, 0x21c, (size as u32).to_le_bytes());
    }
    put(&mut zp, 0x228, (CMDLINE_ADDR as u32).to_le_bytes());
    put(&mut zp, 0x22c, 0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut zp, 0x238, (cmdline_len as u32).to_le_bytes());
    for (i, e) in e820.iter().take(128).enumerate() {
        let off = 0x2d0 + i * 20;
        put(&mut zp, off, e.addr.to_le_bytes());
        put(&mut zp, off + 8, e.size.to_le_bytes());
        put(&mut zp, off + 16, e.typ.to_le_bytes());
    }
    zp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_range_is_carved_out_of_ram() {
        let m = e820_map(256 << 20, &[(64 << 20, 1 << 20)]);
        let ram: Vec<_> = m.iter().filter(|e| e.typ == E820_RAM).map(|e| (e.addr, e.addr + e.size)).collect();
        assert_eq!(ram, vec![(0, LOW_RAM_END), (BIOS_END, 64 << 20), (65 << 20, 256 << 20)]);
        assert!(m.iter().any(|e| e.typ == E820_RESERVED && e.addr == 64 << 20 && e.size == 1 << 20));
        for w in m.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr, "overlap in {m:?}");
        }
    }

    #[test]
    fn zero_page_fields() {
        let zp = boot_params(&e820_map(128 << 20, &[]), 12, Some((0x400_0000, 0x1234)));
        assert_eq!(&zp[0x202..0x206], b"HdrS");
        assert_eq!(zp[0x1e8], 4);
        assert_eq!(u32::from_le_bytes(zp[0x218..0x21c].try_into().unwrap()), 0x400_0000);
        assert_eq!(u32::from_le_bytes(zp[0x238..0x23c].try_into().unwrap()), 12);
        // Last RAM entry ends at the top of memory.
        let off = 0x2d0 + 3 * 20;
        let addr = u64::from_le_bytes(zp[off..off + 8].try_into().unwrap());
        let size = u64::from_le_bytes(zp[off + 8..off + 16].try_into().unwrap());
        assert_eq!(addr + size, 128 << 20);
    }
}
