//! The guest agent's ring (docs/guest-agent.md): its header and its records.
//!
//! The ring is guest memory written only by the guest (arch/x86/kernel/krr.c in the guest
//! patch); the VMM reads it and never writes it. Everything read here is untrusted: a record
//! that does not parse is an error naming its offset, never a panic.

use krr_trace::{Event, RandomSource, Regs, UserReadKind};

/// "HRRRING1" read as a little-endian u64.
pub const RING_MAGIC: u64 = 0x3147_4e49_5252_5248;
/// The ring ABI version this VMM understands.
pub const RING_VERSION: u32 = 1;
/// Bytes before the data area.
pub const HEADER_SIZE: u64 = 4096;
/// Bytes of a record header: type u16, cpu u16, len u32, seq u64.
pub const RECORD_HEADER: usize = 16;

/// Port the agent writes the used length of the data area to when it is full.
pub const PORT_FLUSH: u16 = 0xf6;
/// Port of agent control messages.
pub const PORT_CTRL: u16 = 0xf7;
/// `PORT_CTRL` value: recording started; snapshot the machine now.
pub const CTRL_START: u32 = 1;
/// `PORT_CTRL` value: the kernel panicked and flushed the ring.
pub const CTRL_PANIC: u32 = 2;

const REC_START: u16 = 1;
const REC_SYSCALL: u16 = 2;
const REC_EXCEPTION: u16 = 3;
const REC_INTERRUPT: u16 = 4;
const REC_USER_READ: u16 = 5;
const REC_PTE: u16 = 6;
const REC_PORT: u16 = 7;
const REC_MMIO: u16 = 8;
const REC_RDTSC: u16 = 9;
const REC_RANDOM: u16 = 10;
const REC_RDMSR: u16 = 11;
const REC_CPUID: u16 = 12;
const REC_END: u16 = 13;
const REC_HANDOFF: u16 = 14;

/// A ring that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("the ring header has magic {0:#018x}, not the krr agent's (is the guest kernel built with the krr patch?)")]
    BadMagic(u64),
    #[error("the guest agent speaks ring version {0}; this krr understands version {RING_VERSION}")]
    Version(u32),
    #[error("ring header: {0}")]
    BadHeader(String),
    #[error("ring record at data offset {offset}: {msg}")]
    BadRecord { offset: usize, msg: String },
}

/// The ring header, as the guest last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingHeader {
    pub header_size: u32,
    /// The whole ring, header included.
    pub size: u64,
    /// Bytes of complete records in the data area.
    pub head: u64,
    /// The next sequence number the agent will hand out.
    pub seq: u64,
    pub flushes: u64,
    pub active: bool,
    pub start_cpu: u32,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl RingHeader {
    /// Bytes of the header that carry fields.
    pub const LEN: usize = 56;
    /// Offset of the u32 `active` flag: zero (like the whole header) until the agent starts.
    pub const ACTIVE_OFFSET: usize = 48;

    /// Parse and check the header of a ring of `ring_size` bytes.
    pub fn parse(b: &[u8], ring_size: u64) -> Result<Self, RingError> {
        if b.len() < Self::LEN {
            return Err(RingError::BadHeader(format!("{} bytes, need {}", b.len(), Self::LEN)));
        }
        let magic = u64_at(b, 0);
        if magic != RING_MAGIC {
            return Err(RingError::BadMagic(magic));
        }
        let version = u32_at(b, 8);
        if version != RING_VERSION {
            return Err(RingError::Version(version));
        }
        let h = RingHeader {
            header_size: u32_at(b, 12),
            size: u64_at(b, 16),
            head: u64_at(b, 24),
            seq: u64_at(b, 32),
            flushes: u64_at(b, 40),
            active: u32_at(b, Self::ACTIVE_OFFSET) != 0,
            start_cpu: u32_at(b, 52),
        };
        if h.header_size as u64 != HEADER_SIZE {
            return Err(RingError::BadHeader(format!(
                "header size {} (expected {HEADER_SIZE})",
                h.header_size
            )));
        }
        if h.size != ring_size {
            return Err(RingError::BadHeader(format!(
                "the guest thinks the ring is {} bytes; the VMM reserved {ring_size}",
                h.size
            )));
        }
        if h.head > h.size - HEADER_SIZE {
            return Err(RingError::BadHeader(format!("head {} beyond the data area", h.head)));
        }
        Ok(h)
    }
}

/// One record: its place in the log and the event it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub body: RecordBody,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordBody {
    Event(Event),
    /// The kernel panicked (written just before the panic flush).
    EndPanic,
}

fn regs_at(b: &[u8], o: usize) -> Regs {
    let mut a = [0u64; Regs::COUNT];
    for (i, v) in a.iter_mut().enumerate() {
        *v = u64_at(b, o + 8 * i);
    }
    Regs::from_array(&a)
}

const REGS_LEN: usize = 8 * Regs::COUNT;

/// Parse the records in `data` (a prefix of the data area: whole records only).
pub fn parse_records(data: &[u8], out: &mut Vec<Record>) -> Result<(), RingError> {
    let mut off = 0usize;
    while off < data.len() {
        let bad = |msg: String| RingError::BadRecord { offset: off, msg };
        if data.len() - off < RECORD_HEADER {
            return Err(bad(format!("{} trailing bytes, less than a record header", data.len() - off)));
        }
        let ty = u16_at(data, off);
        let vcpu = u16_at(data, off + 2) as u32;
        let len = u32_at(data, off + 4) as usize;
        let seq = u64_at(data, off + 8);
        if len < RECORD_HEADER || len % 8 != 0 || len > data.len() - off {
            return Err(bad(format!("length {len} (type {ty}) is not a whole record here")));
        }
        let p = &data[off + RECORD_HEADER..off + len];
        let need = |n: usize| {
            if p.len() < n {
                Err(bad(format!("type {ty}: payload of {} bytes, need {n}", p.len())))
            } else {
                Ok(())
            }
        };
        let event = match ty {
            REC_START => {
                need(8)?;
                Event::Start { vcpu, pos: u64_at(p, 0) }
            }
            REC_SYSCALL => {
                need(REGS_LEN)?;
                Event::Syscall { vcpu, regs: regs_at(p, 0) }
            }
            REC_EXCEPTION => {
                need(24 + REGS_LEN)?;
                Event::Exception {
                    vcpu,
                    vector: u64_at(p, 0) as u8,
                    error_code: u64_at(p, 8),
                    cr2: u64_at(p, 16),
                    regs: regs_at(p, 24),
                }
            }
            REC_INTERRUPT => {
                need(16 + REGS_LEN)?;
                Event::Interrupt { vcpu, vector: u64_at(p, 0) as u8, pos: u64_at(p, 8), regs: regs_at(p, 16) }
            }
            REC_USER_READ => {
                need(16)?;
                let kind = u32_at(p, 0);
                let n = u32_at(p, 4) as usize;
                need(16 + n)?;
                let read = user_read_kind(kind).ok_or_else(|| bad(format!("user read kind {kind}")))?;
                Event::UserRead { vcpu, read, addr: u64_at(p, 8), data: p[16..16 + n].to_vec() }
            }
            REC_PTE => {
                need(16)?;
                Event::PteRead { vcpu, addr: u64_at(p, 0), value: u64_at(p, 8) }
            }
            REC_PORT => {
                need(8)?;
                let size = p[2];
                if !matches!(size, 1 | 2 | 4) {
                    return Err(bad(format!("port read of size {size}")));
                }
                Event::PortRead { vcpu, port: u16_at(p, 0), size, value: u32_at(p, 4) }
            }
            REC_MMIO => {
                need(24)?;
                let size = u64_at(p, 8);
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return Err(bad(format!("MMIO read of size {size}")));
                }
                Event::MmioRead { vcpu, addr: u64_at(p, 0), size: size as u8, value: u64_at(p, 16) }
            }
            REC_RDTSC => {
                need(16)?;
                let aux = u64_at(p, 8);
                Event::Rdtsc { vcpu, tsc: u64_at(p, 0), aux: (aux != u64::MAX).then_some(aux as u32) }
            }
            REC_RANDOM => {
                need(16)?;
                let source = if u32_at(p, 0) != 0 { RandomSource::Rdseed } else { RandomSource::Rdrand };
                Event::Random { vcpu, source, ok: u32_at(p, 4) != 0, value: u64_at(p, 8) }
            }
            REC_RDMSR => {
                need(16)?;
                let fault = u32_at(p, 4) != 0;
                Event::Rdmsr { vcpu, msr: u32_at(p, 0), fault, value: if fault { 0 } else { u64_at(p, 8) } }
            }
            REC_CPUID => {
                need(24)?;
                Event::Cpuid {
                    vcpu,
                    leaf: u32_at(p, 0),
                    subleaf: u32_at(p, 4),
                    eax: u32_at(p, 8),
                    ebx: u32_at(p, 12),
                    ecx: u32_at(p, 16),
                    edx: u32_at(p, 20),
                }
            }
            REC_HANDOFF => {
                need(8)?;
                Event::LockHandoff { vcpu, pos: u64_at(p, 0) }
            }
            REC_END => {
                out.push(Record { seq, body: RecordBody::EndPanic });
                off += len;
                continue;
            }
            other => return Err(bad(format!("unknown record type {other}"))),
        };
        out.push(Record { seq, body: RecordBody::Event(event) });
        off += len;
    }
    Ok(())
}

/// The trace's kind for the agent's user-read code (asm/krr.h `KRR_UR_*`).
fn user_read_kind(code: u32) -> Option<UserReadKind> {
    Some(match code {
        0 => UserReadKind::CopyFromUser,
        1 => UserReadKind::GetUser,
        2 => UserReadKind::StrncpyFromUser,
        3 => UserReadKind::StrnlenUser,
        4 => UserReadKind::Futex,
        5 => UserReadKind::KmapAnon,
        6 => UserReadKind::IoUringSq,
        _ => return None,
    })
}

/// Builds records in the agent's layout (tests and fuzzing).
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    pub fn record(ty: u16, cpu: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
        let len = (RECORD_HEADER + payload.len()).div_ceil(8) * 8;
        let mut r = Vec::with_capacity(len);
        r.extend_from_slice(&ty.to_le_bytes());
        r.extend_from_slice(&cpu.to_le_bytes());
        r.extend_from_slice(&(len as u32).to_le_bytes());
        r.extend_from_slice(&seq.to_le_bytes());
        r.extend_from_slice(payload);
        r.resize(len, 0);
        r
    }

    pub fn words(v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub fn header(size: u64, head: u64, seq: u64) -> Vec<u8> {
        header_flushed(size, head, seq, 0)
    }

    pub fn header_flushed(size: u64, head: u64, seq: u64, flushes: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE as usize];
        h[0..8].copy_from_slice(&RING_MAGIC.to_le_bytes());
        h[8..12].copy_from_slice(&RING_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&head.to_le_bytes());
        h[32..40].copy_from_slice(&seq.to_le_bytes());
        h[40..48].copy_from_slice(&flushes.to_le_bytes());
        h[48..52].copy_from_slice(&1u32.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn parses_every_record_type() {
        let regs: Vec<u64> = (1..=18).collect();
        let mut d = Vec::new();
        d.extend(record(REC_START, 0, 0, &words(&[77])));
        d.extend(record(REC_SYSCALL, 0, 1, &words(&regs)));
        let mut exc = words(&[14, 6, 0x1000]);
        exc.extend(words(&regs));
        d.extend(record(REC_EXCEPTION, 0, 2, &exc));
        let mut irq = words(&[0xec, 500]);
        irq.extend(words(&regs));
        d.extend(record(REC_INTERRUPT, 0, 3, &irq));
        let mut ur = vec![0, 0, 0, 0, 3, 0, 0, 0];
        ur.extend(words(&[0x400000]));
        ur.extend(b"abc");
        d.extend(record(REC_USER_READ, 0, 5, &ur));
        d.extend(record(REC_PTE, 0, 4, &words(&[0xffff8880, 0x8000000000000067])));
        d.extend(record(REC_PORT, 0, 6, &[0xfd, 0x03, 1, 0, 0x60, 0, 0, 0]));
        d.extend(record(REC_MMIO, 0, 7, &words(&[0xfee00030, 4, 0x50014])));
        d.extend(record(REC_RDTSC, 0, 8, &words(&[12345, u64::MAX])));
        d.extend(record(REC_RANDOM, 0, 9, &[1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]));
        d.extend(record(REC_RDMSR, 0, 10, &[0x10, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]));
        d.extend(record(REC_RDMSR, 0, 11, &[0x3a, 0, 0, 0, 1, 0, 0, 0, 9, 9, 0, 0, 0, 0, 0, 0]));
        let cpuid: Vec<u8> = [1u32, 0, 2, 3, 4, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        d.extend(record(REC_CPUID, 0, 12, &cpuid));
        d.extend(record(REC_HANDOFF, 1, 13, &words(&[901])));
        d.extend(record(REC_END, 0, 14, &[2, 0, 0, 0]));
        let mut out = Vec::new();
        parse_records(&d, &mut out).unwrap();
        assert_eq!(out.len(), 15);
        assert_eq!(out[13].body, RecordBody::Event(Event::LockHandoff { vcpu: 1, pos: 901 }));
        let regs = Regs::from_array(&std::array::from_fn(|i| i as u64 + 1));
        assert_eq!(out[0].body, RecordBody::Event(Event::Start { vcpu: 0, pos: 77 }));
        assert_eq!(out[1].body, RecordBody::Event(Event::Syscall { vcpu: 0, regs }));
        assert_eq!(
            out[2].body,
            RecordBody::Event(Event::Exception { vcpu: 0, vector: 14, error_code: 6, cr2: 0x1000, regs })
        );
        assert_eq!(
            out[3].body,
            RecordBody::Event(Event::Interrupt { vcpu: 0, vector: 0xec, pos: 500, regs })
        );
        assert_eq!(
            out[4],
            Record {
                seq: 5,
                body: RecordBody::Event(Event::UserRead {
                    vcpu: 0,
                    read: UserReadKind::CopyFromUser,
                    addr: 0x400000,
                    data: b"abc".to_vec()
                })
            }
        );
        assert_eq!(
            out[6].body,
            RecordBody::Event(Event::PortRead { vcpu: 0, port: 0x3fd, size: 1, value: 0x60 })
        );
        assert_eq!(out[8].body, RecordBody::Event(Event::Rdtsc { vcpu: 0, tsc: 12345, aux: None }));
        assert_eq!(
            out[9].body,
            RecordBody::Event(Event::Random { vcpu: 0, source: RandomSource::Rdseed, ok: true, value: 9 })
        );
        assert_eq!(
            out[10].body,
            RecordBody::Event(Event::Rdmsr { vcpu: 0, msr: 0x10, value: 5, fault: false })
        );
        assert_eq!(
            out[11].body,
            RecordBody::Event(Event::Rdmsr { vcpu: 0, msr: 0x3a, value: 0, fault: true })
        );
        assert_eq!(out[14], Record { seq: 14, body: RecordBody::EndPanic });
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let mut out = Vec::new();
        // Truncated header, zero length, overlong length, short payload, unknown type.
        assert!(parse_records(&[1, 0, 0], &mut out).is_err());
        assert!(parse_records(&record(REC_START, 0, 0, &[]), &mut out).is_err());
        let mut r = record(REC_START, 0, 0, &words(&[1]));
        r[4] = 200;
        assert!(parse_records(&r, &mut out).is_err());
        let e = parse_records(&record(99, 0, 0, &[]), &mut out).unwrap_err();
        assert!(e.to_string().contains("unknown record type 99"), "{e}");
        let mut ur = vec![0, 0, 0, 0, 0xff, 0xff, 0, 0];
        ur.extend(words(&[0]));
        assert!(parse_records(&record(REC_USER_READ, 0, 0, &ur), &mut out).is_err());
    }

    /// The agent's KRR_UR_* codes 0..=6 (asm/krr.h) are the trace's kinds in order; 7 is not one.
    #[test]
    fn every_agent_user_read_kind_decodes() {
        let names: Vec<_> = (0..7).map(|c| user_read_kind(c).map(UserReadKind::name)).collect();
        assert_eq!(
            names,
            [
                "copy_from_user",
                "get_user",
                "strncpy_from_user",
                "strnlen_user",
                "futex",
                "kmap_anon",
                "io_uring_sq"
            ]
            .map(Some)
        );
        assert_eq!(user_read_kind(7), None);
    }

    #[test]
    fn header_checks() {
        let h = header(1 << 20, 64, 3);
        let p = RingHeader::parse(&h, 1 << 20).unwrap();
        assert_eq!((p.head, p.seq, p.active), (64, 3, true));
        assert!(matches!(RingHeader::parse(&h, 2 << 20), Err(RingError::BadHeader(_))));
        let mut bad = h.clone();
        bad[0] = 0;
        assert!(matches!(RingHeader::parse(&bad, 1 << 20), Err(RingError::BadMagic(_))));
        let mut v2 = h.clone();
        v2[8] = 2;
        assert_eq!(RingHeader::parse(&v2, 1 << 20), Err(RingError::Version(2)));
        let big = header(1 << 20, 1 << 20, 0);
        assert!(RingHeader::parse(&big, 1 << 20).is_err());
    }
}
