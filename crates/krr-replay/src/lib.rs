//! krr's replayer: re-executes a recorded guest kernel, instruction by instruction, on krr-emu,
//! from the trace's start snapshot, and proves it is the recorded execution by checking every
//! logged event as the kernel reaches it (docs/replay.md).
//!
//! - `events`: the trace's events by index, a few decoded blocks in memory at a time;
//! - `load`: the trace, the kernel check, the start snapshot as an emulated machine;
//! - `hooks`: where the guest agent's functions are;
//! - `engine`: the replay loop and the [`krr_emu::Platform`] that feeds the logged inputs;
//! - `report`: the divergence report.

pub mod engine;
pub mod events;
pub mod hooks;
mod kvm_state;
pub mod load;
pub mod report;

use std::path::PathBuf;

pub use engine::{Checkpoint, Outcome, Replayer, Session, Stop, Watch};
pub use events::{EventRef, Events};
pub use hooks::Hooks;
pub use load::{check_kernel, cpu_profile, load_snapshot, load_trace, Trace};
pub use report::Divergence;

/// Why a replay could not start (a divergence is not an error of this kind: it is a result).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Trace(#[from] krr_trace::TraceError),
    #[error("{0}: the trace has no start snapshot (the guest agent never started recording)")]
    NoSnapshot(PathBuf),
    #[error("start snapshot: {0}")]
    Snapshot(String),
    #[error("kernel: {0}")]
    Kernel(String),
    #[error("{} is not the kernel this trace was recorded with (build-id {found}, the trace wants {wanted})", vmlinux.display())]
    WrongKernel { vmlinux: PathBuf, found: String, wanted: String },
    #[error("cannot replay {0}")]
    Unsupported(String),
    #[error("the trace was recorded on a {0:?} CPU, and krr-emu has no profile of that vendor's undefined flags and results (it has amd and intel); replay with --cpu-profile amd|intel to run with another vendor's, at the risk of a divergence where they differ")]
    UnknownVendor(String),
}
