//! Intel MultiProcessor Specification 1.4 tables, so Linux (without ACPI) finds every vCPU, the
//! I/O APIC and the ISA interrupt routing.

use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR, MPTABLE_ADDR};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg()
}

/// The floating pointer structure followed by the configuration table, to be placed at
/// [`MPTABLE_ADDR`]. vCPU `i` has APIC ID `i`; the I/O APIC has ID `vcpus`.
pub fn mptable(vcpus: u32) -> Vec<u8> {
    let ioapic_id = vcpus as u8;
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for i in 0..vcpus {
        let flags = CPU_ENABLED | if i == 0 { CPU_BOOTSTRAP } else { 0 };
        let mut e = vec![0u8, i as u8, APIC_VERSION, flags];
        e.extend_from_slice(&0x0006_00f0u32.to_le_bytes()); // signature: family 6
        e.extend_from_slice(&0x0000_0201u32.to_le_bytes()); // features: FPU, APIC
        e.extend_from_slice(&[0u8; 8]);
        entries.extend(e);
        count += 1;
    }
    entries.extend([1u8, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    entries.extend([2u8, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    // ISA IRQ n -> I/O APIC pin n, edge/high as the bus defines (flags 0).
    for irq in 0..16u8 {
        let typ = INT_TYPE_INT;
        entries.extend([3u8, typ, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 = ExtINT, LINT1 = NMI on every local APIC.
    entries.extend([4u8, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([4u8, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_ADDR + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"KRR     ");
    table.extend_from_slice(b"KRR VM      ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table
    table.push(0);
    table.push(0);
    table.extend(entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4);
    fp.push(0); // checksum
    fp.extend_from_slice(&[0u8; 5]);
    fp[10] = checksum(&fp);
    fp.extend(table);
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let t = mptable(4);
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 4 + 1 + 1 + 16 + 2);
        // Processor entries: the first is the bootstrap processor.
        assert_eq!(table[44], 0);
        assert_eq!(table[44 + 3], CPU_ENABLED | CPU_BOOTSTRAP);
        assert_eq!(table[64 + 3], CPU_ENABLED);
    }
}
