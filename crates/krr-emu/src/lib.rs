//! `krr-emu`: the x86-64 system emulator krr replays the kernel on (and the VMM's `emu`
//! backend). Pure Rust on the `iced-x86` decoder; no `unsafe`.
//!
//! # Public API (stable names; the differential test harness depends on them)
//!
//! - [`Cpu`]: all architectural state as public fields — `gpr[0..16]` (RAX=0 .. R15=15),
//!   `rip`, `rflags`, `seg[SegReg::*]` ([`Segment`]: selector + cached base/limit/type/s/dpl/
//!   present/avl/l/db/g/unusable; FS/GS base = the FS_BASE/GS_BASE MSRs), `ldtr`, `tr`,
//!   `gdtr`/`idtr` ([`DescriptorTable`]), `cr0 cr2 cr3 cr4 cr8`, `efer`, `msrs` ([`Msrs`]),
//!   `dr[0..8]`, `fpu` ([`FpuState`]: x87 in FXSAVE terms, `xmm[0..16]`, `mxcsr`;
//!   `to_fxsave()`/`load_fxsave()` convert to/from the 512-byte image), `icount`
//!   (retired instructions), `halted`, `features` ([`CpuFeatures`], with the [`Vendor`] whose
//!   undefined results the CPU reproduces), `interrupt_shadow`,
//!   `pending_db`. `Cpu::new()` is the RESET state, `Cpu::new_long_mode(cr3)` /
//!   `setup_long_mode` give flat 64-bit CPL0 with paging. `read_msr`/`write_msr` access the
//!   MSRs the CPU owns. `Cpu` is `Clone` (a snapshot; the decode cache is not copied).
//! - [`Cpu::step`]`(&mut mem, &mut platform) -> Result<`[`StepEvent`]`, `[`EmuError`]`>`:
//!   exactly one instruction, or one event delivery (#DB trap, external interrupt).
//! - [`Cpu::run`]`(&mut mem, &mut platform, max_instructions, stop) -> Result<`[`RunExit`]`, _>`:
//!   stops after exactly `max_instructions` retirements, when `stop(&Cpu)` is true (checked at
//!   every boundary), or when halted with nothing pending.
//! - [`GuestMemory`]: guest-physical RAM (read/write within a 4 KiB page, `false` = not RAM →
//!   MMIO through the platform) plus code-page tracking for decode-cache invalidation.
//!   [`FlatMemory`] implements it with copy-on-write pages: `snapshot()`/`restore()`.
//! - [`Platform`]: every input — port I/O, MMIO, RDTSC, foreign MSRs, RDRAND/RDSEED, CPUID,
//!   HLT, interrupt pending/acknowledge. Methods return `Result<_, `[`PlatformStop`]`>`; an
//!   error stops `step` with `EmuError::Platform` and the instruction does not retire.
//!   [`SimplePlatform`] is a deterministic default.
//! - [`coverage::is_implemented`]: static "does the executor dispatch this instruction".
//! - Unimplemented instructions stop with [`EmuError::Unimplemented`] (RIP, bytes, text),
//!   never a silent skip. Guest faults are delivered through the IDT
//!   ([`StepEvent::Exception`]); a fault while delivering #DF is [`EmuError::TripleFault`].
//!
//! - Other entry points: `Cpu::new_sipi(vector)` (an AP after INIT/SIPI), `inject_nmi()`,
//!   `set_decode_cache(bool)`, `decode_cache_stats()`, `flush_tlb_all()`,
//!   `flush_decode_cache()`, `interrupt_window_open()`, `cpl()`, `mode()`.
//!
//! ## Rules for code that edits `Cpu` fields directly
//!
//! - The TLB (and the one-entry fetch translation) is architectural-ish state: like hardware
//!   it is only flushed by MOV CR3/CR4/CR0, INVLPG, WRMSR EFER. After writing `cr0`, `cr3`,
//!   `cr4` or `efer` directly, call `flush_tlb_all()`.
//! - CPL is `seg[Cs].dpl` in protected mode: set it together with the selector's RPL.
//! - `FlatMemory` tracks code pages itself; another `GuestMemory` must bump `code_epoch` on
//!   writes to pages passed to `mark_code_page`, or decoded instructions go stale.
//!
//! # Not implemented (stops with `EmuError::Unimplemented`/`Unsupported`, never skipped)
//!
//! AVX/AVX-512 and other VEX/EVEX encodings, SSE3+ (PALIGNR, PCMPISTRI, ...), x87 arithmetic
//! and the FERR# signalling of x87 exceptions with CR0.NE clear (#XM and #MF themselves are
//! delivered), MMX forms, XSAVE family, FSGSBASE
//! instructions, MONITOR/MWAIT, task switches, task and 16-bit interrupt gates, call gates,
//! virtual-8086 mode, legacy (non-long-mode) paging, hardware
//! breakpoints (DR7 is stored, never armed).

//! # Design
//!
//! `exec` fetches through the TLB (`paging`), looks the physical address up in a direct-mapped
//! decoded-instruction cache, and calls the handler the dispatch table (`insn::handler_for`)
//! chose at decode time. Instruction families live in `insn/*.rs`, one file each. Faults are
//! `Exception` values returned up to `exec`, which restores RIP and delivers them
//! (`exceptions`). Segment loading and privilege checks live in `insn/system.rs`.

#![forbid(unsafe_code)]

pub mod coverage;
/// The decoder krr-emu is built on, re-exported so tools (emu-coverage) decode identically.
pub use iced_x86;
pub mod cpu;
pub mod error;
mod exceptions;
mod exec;
mod insn;
pub mod memory;
pub mod modes;
pub mod paging;
pub mod platform;
pub mod vendor;

#[cfg(test)]
pub(crate) mod testutil;

pub use cpu::{Cpu, CpuFeatures, DescriptorTable, FpuState, Mode, Msrs, SegReg, Segment};
pub use error::{EmuError, Exception};
pub use exec::{RunExit, StepEvent};
pub use memory::{FlatMemory, GuestMemory, MemorySnapshot, PAGE_SIZE};
pub use platform::{CpuidResult, Platform, PlatformStop, SimplePlatform};
pub use vendor::Vendor;
