//! Compact binary encoding of events inside a block.
//!
//! Each event is a tag byte followed by varint fields. The tag holds the wire kind in its low five
//! bits and the vCPU in its high three (7 means "a varint vCPU follows"). Positions, timestamps,
//! user addresses and registers are delta-encoded against the previous value of the same vCPU;
//! that state starts from zero at every block, so a block decodes on its own.

use crate::event::{EndReason, Event, EventKind, RandomSource, Regs, UserReadKind};
use crate::limits::{MAX_EVENT_DATA, MAX_VCPUS};

/// Wire tag used for RDTSCP (an [`EventKind::Rdtsc`] with `aux`), so plain RDTSC needs no flag byte.
const TAG_RDTSCP: u8 = 17;
const VCPU_INLINE_MAX: u32 = 6;
const VCPU_ESCAPE: u8 = 7;

/// Why a block's bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event data ends early at byte {offset} of the block")]
    Truncated { offset: usize },
    #[error("unknown event tag {tag} at byte {offset} of the block")]
    UnknownTag { tag: u8, offset: usize },
    #[error("varint longer than 64 bits at byte {offset} of the block")]
    VarintOverflow { offset: usize },
    #[error("field out of range at byte {offset} of the block: {what}")]
    OutOfRange { what: &'static str, offset: usize },
}

/// Per-vCPU delta state shared by the encoder and the decoder.
#[derive(Debug, Clone, Default)]
struct VcpuState {
    tsc: u64,
    pos: u64,
    uaddr: u64,
    regs: [u64; Regs::COUNT],
}

#[derive(Debug, Clone, Default)]
struct DeltaState {
    vcpus: Vec<VcpuState>,
}

impl DeltaState {
    fn get(&mut self, vcpu: u32) -> &mut VcpuState {
        let i = vcpu as usize;
        if i >= self.vcpus.len() {
            self.vcpus.resize(i + 1, VcpuState::default());
        }
        &mut self.vcpus[i]
    }
}

fn pos_slot(s: &mut VcpuState) -> &mut u64 {
    &mut s.pos
}

fn uaddr_slot(s: &mut VcpuState) -> &mut u64 {
    &mut s.uaddr
}

fn tsc_slot(s: &mut VcpuState) -> &mut u64 {
    &mut s.tsc
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes events into a block's raw (uncompressed) bytes.
#[derive(Debug, Default)]
pub struct Encoder {
    state: DeltaState,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the delta state: the next event starts a new block.
    pub fn reset(&mut self) {
        self.state.vcpus.clear();
    }

    /// Append the encoding of `ev` to `out`. The caller guarantees the limits
    /// ([`crate::limits`]) hold; see [`crate::writer`], which checks them.
    pub fn encode(&mut self, ev: &Event, out: &mut Vec<u8>) {
        let vcpu = ev.vcpu();
        let wire = match ev {
            Event::Rdtsc { aux: Some(_), .. } => TAG_RDTSCP,
            _ => ev.kind().tag(),
        };
        if vcpu <= VCPU_INLINE_MAX {
            out.push(wire | ((vcpu as u8) << 5));
        } else {
            out.push(wire | (VCPU_ESCAPE << 5));
            put_varint(out, vcpu as u64);
        }
        let st = self.state.get(vcpu);
        match ev {
            Event::Start { pos, .. } | Event::LockHandoff { pos, .. } | Event::LockResync { pos, .. } => {
                put_delta(out, &mut st.pos, *pos)
            }
            Event::Syscall { regs, .. } => put_regs(out, &mut st.regs, regs),
            Event::Exception { vector, error_code, cr2, regs, .. } => {
                out.push(*vector);
                put_varint(out, *error_code);
                put_delta(out, &mut st.uaddr, *cr2);
                put_regs(out, &mut st.regs, regs);
            }
            Event::Interrupt { vector, pos, regs, .. } => {
                out.push(*vector);
                put_delta(out, &mut st.pos, *pos);
                put_regs(out, &mut st.regs, regs);
            }
            Event::UserRead { read, addr, data, .. } => {
                out.push(read.code());
                put_delta(out, &mut st.uaddr, *addr);
                put_bytes(out, data);
            }
            Event::PteRead { addr, value, .. } => {
                put_varint(out, *addr);
                put_varint(out, *value);
            }
            Event::PortRead { port, size, value, .. } => {
                put_varint(out, *port as u64);
                out.push(*size);
                put_varint(out, *value as u64);
            }
            Event::MmioRead { addr, size, value, .. } => {
                put_varint(out, *addr);
                out.push(*size);
                put_varint(out, *value);
            }
            Event::Rdtsc { tsc, aux, .. } => {
                put_delta(out, &mut st.tsc, *tsc);
                if let Some(aux) = aux {
                    put_varint(out, *aux as u64);
                }
            }
            Event::Random { source, value, ok, .. } => {
                out.push(u8::from(*source == RandomSource::Rdseed) | (u8::from(*ok) << 1));
                out.extend_from_slice(&value.to_le_bytes());
            }
            Event::Rdmsr { msr, value, fault, .. } => {
                // The #GP flag rides in the low bit of the MSR number.
                put_varint(out, ((*msr as u64) << 1) | u64::from(*fault));
                put_varint(out, *value);
            }
            Event::Cpuid { leaf, subleaf, eax, ebx, ecx, edx, .. } => {
                for v in [leaf, subleaf, eax, ebx, ecx, edx] {
                    put_varint(out, *v as u64);
                }
            }
            Event::Dma { gpa, data, .. } => {
                put_varint(out, *gpa);
                put_bytes(out, data);
            }
            Event::Console { len, .. } => put_varint(out, *len as u64),
            Event::End { reason, .. } => out.push(reason.code()),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_delta(out: &mut Vec<u8>, last: &mut u64, v: u64) {
    put_varint(out, zigzag(v.wrapping_sub(*last) as i64));
    *last = v;
}

fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_regs(out: &mut Vec<u8>, last: &mut [u64; Regs::COUNT], regs: &Regs) {
    let cur = regs.to_array();
    let mut mask = 0u64;
    for (i, (c, l)) in cur.iter().zip(last.iter()).enumerate() {
        if c != l {
            mask |= 1 << i;
        }
    }
    put_varint(out, mask);
    for (i, (c, l)) in cur.iter().zip(last.iter()).enumerate() {
        if mask & (1 << i) != 0 {
            put_varint(out, zigzag(c.wrapping_sub(*l) as i64));
        }
    }
    *last = cur;
}

/// Decodes the events of one block, in order. Owns or borrows the block's raw bytes.
#[derive(Debug)]
pub struct Decoder<B = Vec<u8>> {
    buf: B,
    off: usize,
    state: DeltaState,
}

impl<B: AsRef<[u8]>> Decoder<B> {
    pub fn new(buf: B) -> Self {
        Decoder { buf, off: 0, state: DeltaState::default() }
    }

    /// Byte offset of the next event in the block.
    pub fn offset(&self) -> usize {
        self.off
    }

    /// Whether every byte of the block was consumed.
    pub fn is_empty(&self) -> bool {
        self.off >= self.buf.as_ref().len()
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.as_ref().get(self.off).ok_or(DecodeError::Truncated { offset: self.off })?;
        self.off += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.off;
        // Fast path: a one-byte varint.
        if let Some(&b) = self.buf.as_ref().get(start) {
            if b < 0x80 {
                self.off += 1;
                return Ok(b as u64);
            }
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = (b & 0x7f) as u64;
            if shift == 63 && bits > 1 {
                return Err(DecodeError::VarintOverflow { offset: start });
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow { offset: start })
    }

    fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let off = self.off;
        u32::try_from(self.varint()?).map_err(|_| DecodeError::OutOfRange { what, offset: off })
    }

    fn delta(&mut self, last: fn(&mut VcpuState) -> &mut u64, vcpu: u32) -> Result<u64, DecodeError> {
        let d = unzigzag(self.varint()?);
        let slot = last(self.state.get(vcpu));
        *slot = slot.wrapping_add(d as u64);
        Ok(*slot)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let off = self.off;
        let len = self.varint()?;
        if len > MAX_EVENT_DATA as u64 {
            return Err(DecodeError::OutOfRange { what: "data length above the limit", offset: off });
        }
        let len = len as usize;
        let buf = self.buf.as_ref();
        let end = self.off.checked_add(len).filter(|e| *e <= buf.len());
        let end = end.ok_or(DecodeError::Truncated { offset: self.off })?;
        let data = buf[self.off..end].to_vec();
        self.off = end;
        Ok(data)
    }

    fn regs(&mut self, vcpu: u32) -> Result<Regs, DecodeError> {
        let off = self.off;
        let mask = self.varint()?;
        if mask >> Regs::COUNT != 0 {
            return Err(DecodeError::OutOfRange { what: "register mask", offset: off });
        }
        let mut cur = self.state.get(vcpu).regs;
        for (i, r) in cur.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *r = r.wrapping_add(unzigzag(self.varint()?) as u64);
            }
        }
        self.state.get(vcpu).regs = cur;
        Ok(Regs::from_array(&cur))
    }

    /// Decode the next event; `Ok(None)` at the end of the block.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag_off = self.off;
        let tag = self.byte()?;
        let wire = tag & 0x1f;
        let vcpu = match tag >> 5 {
            VCPU_ESCAPE => {
                let v = self.varint()?;
                if v >= MAX_VCPUS as u64 {
                    return Err(DecodeError::OutOfRange { what: "vCPU number", offset: tag_off });
                }
                v as u32
            }
            v => v as u32,
        };
        let kind = if wire == TAG_RDTSCP {
            EventKind::Rdtsc
        } else {
            EventKind::from_tag(wire).ok_or(DecodeError::UnknownTag { tag, offset: tag_off })?
        };
        let ev = match kind {
            EventKind::Start => Event::Start { vcpu, pos: self.delta(pos_slot, vcpu)? },
            EventKind::LockHandoff => Event::LockHandoff { vcpu, pos: self.delta(pos_slot, vcpu)? },
            EventKind::LockResync => Event::LockResync { vcpu, pos: self.delta(pos_slot, vcpu)? },
            EventKind::Syscall => Event::Syscall { vcpu, regs: self.regs(vcpu)? },
            EventKind::Exception => {
                let vector = self.byte()?;
                let error_code = self.varint()?;
                let cr2 = self.delta(uaddr_slot, vcpu)?;
                Event::Exception { vcpu, vector, error_code, cr2, regs: self.regs(vcpu)? }
            }
            EventKind::Interrupt => {
                let vector = self.byte()?;
                let pos = self.delta(pos_slot, vcpu)?;
                Event::Interrupt { vcpu, vector, pos, regs: self.regs(vcpu)? }
            }
            EventKind::UserRead => {
                let off = self.off;
                let read = UserReadKind::from_code(self.byte()?)
                    .ok_or(DecodeError::OutOfRange { what: "user read kind", offset: off })?;
                let addr = self.delta(uaddr_slot, vcpu)?;
                Event::UserRead { vcpu, read, addr, data: self.bytes()? }
            }
            EventKind::PteRead => Event::PteRead { vcpu, addr: self.varint()?, value: self.varint()? },
            EventKind::PortRead => {
                let off = self.off;
                let port = u16::try_from(self.varint()?)
                    .map_err(|_| DecodeError::OutOfRange { what: "port number", offset: off })?;
                let size = self.byte()?;
                let value = self.varint_u32("port value")?;
                Event::PortRead { vcpu, port, size, value }
            }
            EventKind::MmioRead => {
                let addr = self.varint()?;
                let size = self.byte()?;
                Event::MmioRead { vcpu, addr, size, value: self.varint()? }
            }
            EventKind::Rdtsc => {
                let tsc = self.delta(tsc_slot, vcpu)?;
                let aux = if wire == TAG_RDTSCP { Some(self.varint_u32("TSC_AUX")?) } else { None };
                Event::Rdtsc { vcpu, tsc, aux }
            }
            EventKind::Random => {
                let off = self.off;
                let flags = self.byte()?;
                if flags > 3 {
                    return Err(DecodeError::OutOfRange { what: "random flags", offset: off });
                }
                let end = self.off + 8;
                let raw = self
                    .buf
                    .as_ref()
                    .get(self.off..end)
                    .ok_or(DecodeError::Truncated { offset: self.off })?;
                let mut v = [0u8; 8];
                v.copy_from_slice(raw);
                self.off = end;
                let source = if flags & 1 != 0 { RandomSource::Rdseed } else { RandomSource::Rdrand };
                Event::Random { vcpu, source, value: u64::from_le_bytes(v), ok: flags & 2 != 0 }
            }
            EventKind::Rdmsr => {
                let off = self.off;
                let m = self.varint()?;
                let msr = u32::try_from(m >> 1)
                    .map_err(|_| DecodeError::OutOfRange { what: "MSR number", offset: off })?;
                Event::Rdmsr { vcpu, msr, value: self.varint()?, fault: m & 1 == 1 }
            }
            EventKind::Cpuid => Event::Cpuid {
                vcpu,
                leaf: self.varint_u32("CPUID leaf")?,
                subleaf: self.varint_u32("CPUID subleaf")?,
                eax: self.varint_u32("CPUID eax")?,
                ebx: self.varint_u32("CPUID ebx")?,
                ecx: self.varint_u32("CPUID ecx")?,
                edx: self.varint_u32("CPUID edx")?,
            },
            EventKind::Dma => Event::Dma { vcpu, gpa: self.varint()?, data: self.bytes()? },
            EventKind::Console => Event::Console { vcpu, len: self.varint_u32("console length")? },
            EventKind::End => {
                let off = self.off;
                let reason = EndReason::from_code(self.byte()?)
                    .ok_or(DecodeError::OutOfRange { what: "end reason", offset: off })?;
                Event::End { vcpu, reason }
            }
        };
        Ok(Some(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(events: &[Event]) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut buf = Vec::new();
        for e in events {
            enc.encode(e, &mut buf);
        }
        let mut dec = Decoder::new(&buf[..]);
        let mut got = Vec::new();
        while let Some(e) = dec.next_event().unwrap() {
            got.push(e);
        }
        assert_eq!(got, events);
        buf
    }

    #[test]
    fn varint_edges() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut d = Decoder::new(&b[..]);
            assert_eq!(d.varint().unwrap(), v);
            assert!(d.is_empty());
        }
        for v in [0i64, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let b = [0xffu8; 11];
        assert!(matches!(Decoder::new(&b[..]).varint(), Err(DecodeError::VarintOverflow { offset: 0 })));
        // Ten bytes whose last carries more than the one remaining bit.
        let mut b = vec![0x80u8; 9];
        b.push(0x02);
        assert!(matches!(Decoder::new(&b[..]).varint(), Err(DecodeError::VarintOverflow { .. })));
    }

    #[test]
    fn rdtsc_deltas_are_small_and_per_vcpu() {
        let evs: Vec<Event> = (0..100u64)
            .map(|i| Event::Rdtsc { vcpu: (i % 2) as u32, tsc: 1_000_000_000_000 + i * 1000, aux: None })
            .collect();
        let buf = roundtrip(&evs);
        // Two full-width first values, then a tag plus a two-byte delta each.
        assert!(buf.len() <= 2 * 8 + 98 * 3, "encoded {} bytes", buf.len());
    }

    #[test]
    fn high_vcpu_uses_escape() {
        let evs = vec![
            Event::Console { vcpu: 6, len: 3 },
            Event::Console { vcpu: 7, len: 3 },
            Event::Console { vcpu: 255, len: 3 },
            Event::Rdtsc { vcpu: 200, tsc: 5, aux: Some(9) },
        ];
        let buf = roundtrip(&evs);
        assert_eq!(buf[0] >> 5, 6);
        assert_eq!(buf[2] >> 5, 7);
    }

    #[test]
    fn unchanged_registers_cost_one_byte() {
        let regs = Regs { gpr: [0xffff_8880_0000_1000; 16], rip: 0x401000, rflags: 0x246 };
        let e = Event::Syscall { vcpu: 0, regs };
        let mut enc = Encoder::new();
        let mut a = Vec::new();
        enc.encode(&e, &mut a);
        let mut b = Vec::new();
        enc.encode(&e, &mut b);
        assert_eq!(b.len(), 2, "tag + empty mask");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            Decoder::new(&[31u8][..]).next_event(),
            Err(DecodeError::UnknownTag { tag: 31, offset: 0 })
        ));
        // A user read claiming more data than the block holds.
        let b = [EventKind::UserRead.tag(), 0, 0, 100, 1, 2];
        assert!(matches!(Decoder::new(&b[..]).next_event(), Err(DecodeError::Truncated { .. })));
        // A data length above the limit is refused before allocating.
        let mut b = vec![EventKind::Dma.tag(), 0];
        put_varint(&mut b, MAX_EVENT_DATA as u64 + 1);
        assert!(matches!(Decoder::new(&b[..]).next_event(), Err(DecodeError::OutOfRange { .. })));
        // A register mask with bits above the 18 registers.
        let mut b = vec![EventKind::Syscall.tag()];
        put_varint(&mut b, 1 << 18);
        assert!(matches!(Decoder::new(&b[..]).next_event(), Err(DecodeError::OutOfRange { .. })));
        // vCPU above the limit.
        let mut b = vec![EventKind::Console.tag() | (7 << 5)];
        put_varint(&mut b, MAX_VCPUS as u64);
        assert!(matches!(Decoder::new(&b[..]).next_event(), Err(DecodeError::OutOfRange { .. })));
    }
}
