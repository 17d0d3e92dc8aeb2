//! krr's VMM: boots a Linux guest and runs it on one of two CPU backends.
//!
//! - `boot`: vmlinux loading, boot_params, e820, MP tables, page tables — plain data both
//!   backends apply.
//! - `devices`: the port-I/O devices (16550 serial, exit-status port, i8042 reset, CMOS stub).
//! - `kvm`: vCPU threads on KVM with the in-kernel irqchip (the fast path on real hardware).
//! - `probe`: what the host's KVM can do (`krr doctor`, `--accel auto`).
//! - `recorder`: the host half of the split recorder: drains the guest agent's ring into a trace.

#[doc(hidden)]
pub mod bench_support;
pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod emu;
pub mod kvm;
pub mod layout;
pub mod probe;
pub mod recorder;
pub mod snapshot;
pub mod vm;

pub use vm::{Accel, ExitReason, RunOutcome, VcpuPlace, VmConfig};
