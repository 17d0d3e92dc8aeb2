//! The event model: one variant per input that crosses into the guest kernel (DESIGN §2).
//!
//! Every event carries the vCPU that received it. Events are stored in the order the kernel
//! consumed them, which is one total order across vCPUs (the kernel lock serializes them).

use serde::{Deserialize, Serialize};

/// Register state at a kernel entry: the user GPRs at a syscall or user exception, or the
/// interrupted GPRs of an interrupt (user or kernel mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Regs {
    /// RAX..R15 in x86 encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15).
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
}

impl Regs {
    /// Number of 64-bit values in a register record (16 GPRs, RIP, RFLAGS).
    pub const COUNT: usize = 18;

    /// The registers as one flat array, in encoding order.
    pub fn to_array(&self) -> [u64; Self::COUNT] {
        let mut out = [0u64; Self::COUNT];
        out[..16].copy_from_slice(&self.gpr);
        out[16] = self.rip;
        out[17] = self.rflags;
        out
    }

    /// Inverse of [`Regs::to_array`].
    pub fn from_array(a: &[u64; Self::COUNT]) -> Self {
        let mut gpr = [0u64; 16];
        gpr.copy_from_slice(&a[..16]);
        Regs { gpr, rip: a[16], rflags: a[17] }
    }
}

/// How the kernel read user memory. The replayer uses it to check that the kernel asks for the
/// same kind of read at the same point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserReadKind {
    CopyFromUser,
    GetUser,
    StrncpyFromUser,
    StrnlenUser,
    Futex,
    KmapAnon,
    IoUringSq,
}

impl UserReadKind {
    pub(crate) const ALL: [UserReadKind; 7] = [
        UserReadKind::CopyFromUser,
        UserReadKind::GetUser,
        UserReadKind::StrncpyFromUser,
        UserReadKind::StrnlenUser,
        UserReadKind::Futex,
        UserReadKind::KmapAnon,
        UserReadKind::IoUringSq,
    ];

    pub(crate) fn code(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            UserReadKind::CopyFromUser => "copy_from_user",
            UserReadKind::GetUser => "get_user",
            UserReadKind::StrncpyFromUser => "strncpy_from_user",
            UserReadKind::StrnlenUser => "strnlen_user",
            UserReadKind::Futex => "futex",
            UserReadKind::KmapAnon => "kmap_anon",
            UserReadKind::IoUringSq => "io_uring_sq",
        }
    }
}

/// Which hardware random-number instruction produced a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandomSource {
    Rdrand,
    Rdseed,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The guest powered off (the workload finished).
    Poweroff,
    /// The guest kernel panicked.
    Panic,
    /// The user interrupted the recorder (Ctrl-C, SIGTERM).
    Interrupted,
    /// The VMM asked the guest to stop (e.g. a time or event limit).
    Stopped,
}

impl EndReason {
    pub(crate) const ALL: [EndReason; 4] =
        [EndReason::Poweroff, EndReason::Panic, EndReason::Interrupted, EndReason::Stopped];

    pub(crate) fn code(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            EndReason::Poweroff => "poweroff",
            EndReason::Panic => "panic",
            EndReason::Interrupted => "interrupted",
            EndReason::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One recorded input to the guest kernel.
///
/// Positions (`pos`) are values of the guest's per-CPU software position counter `krr_pos`
/// (DESIGN §4); together with RIP and the GPRs they name one dynamic instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Recording starts on this vCPU at this position.
    Start { vcpu: u32, pos: u64 },
    /// A system call entered the kernel; `regs` are the user registers at entry.
    Syscall { vcpu: u32, regs: Regs },
    /// An exception taken from user mode.
    Exception { vcpu: u32, vector: u8, error_code: u64, cr2: u64, regs: Regs },
    /// An interrupt (external, timer, IPI) taken in user or kernel mode at an exact position.
    Interrupt { vcpu: u32, vector: u8, pos: u64, regs: Regs },
    /// Bytes the kernel read from user memory at `addr`.
    UserRead {
        vcpu: u32,
        read: UserReadKind,
        addr: u64,
        #[serde(with = "hex_bytes")]
        data: Vec<u8>,
    },
    /// A user PTE value the kernel read (hardware may have set its A/D bits while user code ran).
    PteRead { vcpu: u32, addr: u64, value: u64 },
    /// A port read (`in`); `size` is 1, 2 or 4.
    PortRead { vcpu: u32, port: u16, size: u8, value: u32 },
    /// An MMIO read; `size` is 1, 2, 4 or 8.
    MmioRead { vcpu: u32, addr: u64, size: u8, value: u64 },
    /// RDTSC (`aux` is `None`) or RDTSCP (`aux` is TSC_AUX).
    Rdtsc { vcpu: u32, tsc: u64, aux: Option<u32> },
    /// RDRAND / RDSEED: the value and whether the instruction reported success (CF).
    Random { vcpu: u32, source: RandomSource, value: u64, ok: bool },
    /// RDMSR executed by the kernel. `fault`: it raised #GP (a probing `rdmsr_safe`); `value` is 0.
    Rdmsr { vcpu: u32, msr: u32, value: u64, fault: bool },
    /// CPUID executed by the kernel after recording started.
    Cpuid { vcpu: u32, leaf: u32, subleaf: u32, eax: u32, ebx: u32, ecx: u32, edx: u32 },
    /// Data a device wrote into guest memory, at the point the kernel consumed it.
    Dma {
        vcpu: u32,
        gpa: u64,
        #[serde(with = "hex_bytes")]
        data: Vec<u8>,
    },
    /// The kernel lock passed to `vcpu`, which resumes at position `pos`.
    LockHandoff { vcpu: u32, pos: u64 },
    /// `vcpu` re-acquired the kernel lock after a wait section, at position `pos`.
    LockResync { vcpu: u32, pos: u64 },
    /// The guest wrote `len` bytes to the console here (the bytes are in the `console` file).
    Console { vcpu: u32, len: u32 },
    /// Recording ended.
    End { vcpu: u32, reason: EndReason },
}

/// The kind of an event, without its payload (for statistics and filtering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum EventKind {
    Start = 0,
    Syscall = 1,
    Exception = 2,
    Interrupt = 3,
    UserRead = 4,
    PteRead = 5,
    PortRead = 6,
    MmioRead = 7,
    Rdtsc = 8,
    Random = 9,
    Rdmsr = 10,
    Cpuid = 11,
    Dma = 12,
    LockHandoff = 13,
    LockResync = 14,
    Console = 15,
    End = 16,
}

impl EventKind {
    /// Every kind, in tag order.
    pub const ALL: [EventKind; 17] = [
        EventKind::Start,
        EventKind::Syscall,
        EventKind::Exception,
        EventKind::Interrupt,
        EventKind::UserRead,
        EventKind::PteRead,
        EventKind::PortRead,
        EventKind::MmioRead,
        EventKind::Rdtsc,
        EventKind::Random,
        EventKind::Rdmsr,
        EventKind::Cpuid,
        EventKind::Dma,
        EventKind::LockHandoff,
        EventKind::LockResync,
        EventKind::Console,
        EventKind::End,
    ];

    /// The on-disk tag of this kind.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The kind with on-disk tag `tag`.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.get(tag as usize).copied()
    }

    /// A stable lower-case name, used by `krr dump`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Syscall => "syscall",
            EventKind::Exception => "exception",
            EventKind::Interrupt => "interrupt",
            EventKind::UserRead => "user_read",
            EventKind::PteRead => "pte_read",
            EventKind::PortRead => "port_read",
            EventKind::MmioRead => "mmio_read",
            EventKind::Rdtsc => "rdtsc",
            EventKind::Random => "random",
            EventKind::Rdmsr => "rdmsr",
            EventKind::Cpuid => "cpuid",
            EventKind::Dma => "dma",
            EventKind::LockHandoff => "lock_handoff",
            EventKind::LockResync => "lock_resync",
            EventKind::Console => "console",
            EventKind::End => "end",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Event {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Start { .. } => EventKind::Start,
            Event::Syscall { .. } => EventKind::Syscall,
            Event::Exception { .. } => EventKind::Exception,
            Event::Interrupt { .. } => EventKind::Interrupt,
            Event::UserRead { .. } => EventKind::UserRead,
            Event::PteRead { .. } => EventKind::PteRead,
            Event::PortRead { .. } => EventKind::PortRead,
            Event::MmioRead { .. } => EventKind::MmioRead,
            Event::Rdtsc { .. } => EventKind::Rdtsc,
            Event::Random { .. } => EventKind::Random,
            Event::Rdmsr { .. } => EventKind::Rdmsr,
            Event::Cpuid { .. } => EventKind::Cpuid,
            Event::Dma { .. } => EventKind::Dma,
            Event::LockHandoff { .. } => EventKind::LockHandoff,
            Event::LockResync { .. } => EventKind::LockResync,
            Event::Console { .. } => EventKind::Console,
            Event::End { .. } => EventKind::End,
        }
    }

    /// The vCPU this event belongs to.
    pub fn vcpu(&self) -> u32 {
        match *self {
            Event::Start { vcpu, .. }
            | Event::Syscall { vcpu, .. }
            | Event::Exception { vcpu, .. }
            | Event::Interrupt { vcpu, .. }
            | Event::UserRead { vcpu, .. }
            | Event::PteRead { vcpu, .. }
            | Event::PortRead { vcpu, .. }
            | Event::MmioRead { vcpu, .. }
            | Event::Rdtsc { vcpu, .. }
            | Event::Random { vcpu, .. }
            | Event::Rdmsr { vcpu, .. }
            | Event::Cpuid { vcpu, .. }
            | Event::Dma { vcpu, .. }
            | Event::LockHandoff { vcpu, .. }
            | Event::LockResync { vcpu, .. }
            | Event::Console { vcpu, .. }
            | Event::End { vcpu, .. } => vcpu,
        }
    }

    /// Size of this event in a naive fixed-width log (8-byte fields, a 8-byte kind/vCPU word,
    /// data inline): the "raw" size that throughput figures are quoted in.
    pub fn raw_size(&self) -> usize {
        const W: usize = 8;
        const REGS: usize = Regs::COUNT * W;
        W + match self {
            Event::Start { .. } => W,
            Event::Syscall { .. } => REGS,
            Event::Exception { .. } => 3 * W + REGS,
            Event::Interrupt { .. } => 2 * W + REGS,
            Event::UserRead { data, .. } => 3 * W + data.len(),
            Event::PteRead { .. } => 2 * W,
            Event::PortRead { .. } => 2 * W,
            Event::MmioRead { .. } => 3 * W,
            Event::Rdtsc { .. } => 2 * W,
            Event::Random { .. } => 2 * W,
            Event::Rdmsr { .. } => 2 * W,
            Event::Cpuid { .. } => 3 * W,
            Event::Dma { data, .. } => 2 * W + data.len(),
            Event::LockHandoff { .. } | Event::LockResync { .. } => W,
            Event::Console { .. } => W,
            Event::End { .. } => W,
        }
    }
}

/// Byte payloads as lower-case hex strings in JSON (`krr dump --json`), not arrays of numbers.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::event::to_hex(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex string"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Lower-case hex of `data`.
pub fn to_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_roundtrip_with_hex_data() {
        let e = Event::UserRead { vcpu: 1, read: UserReadKind::GetUser, addr: 16, data: vec![0, 0xab, 0x10] };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"kind":"user_read","vcpu":1,"read":"get_user","addr":16,"data":"00ab10"}"#);
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
        assert!(serde_json::from_str::<Event>(r#"{"kind":"dma","vcpu":1,"gpa":0,"data":"0"}"#).is_err());
    }

    #[test]
    fn kinds_and_tags_agree() {
        for (i, k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(k.tag() as usize, i);
            assert_eq!(EventKind::from_tag(i as u8), Some(*k));
        }
        assert_eq!(EventKind::from_tag(EventKind::ALL.len() as u8), None);
        for k in UserReadKind::ALL {
            assert_eq!(UserReadKind::from_code(k.code()), Some(k));
        }
        for r in EndReason::ALL {
            assert_eq!(EndReason::from_code(r.code()), Some(r));
        }
    }
}
