//! krr's trace format: the event model, a streaming writer and a reader that survives damage.
//!
//! A trace is a directory (docs/trace-format.md):
//! - `header`: magic, format version, VM and kernel identity, CPUID, snapshot reference, and a
//!   completion record written last;
//! - `events`: independently compressed, checksummed blocks of compactly encoded [`Event`]s;
//! - `snapshot`: the VM state at the start of recording (written by the VMM);
//! - `console`: the guest's console output, positioned in the event stream by
//!   [`Event::Console`] markers.

mod block;
mod codec;
mod error;
mod event;
mod header;
pub mod limits;
mod reader;
mod writer;

pub use block::{BlockHeader, Codec};
pub use codec::{DecodeError, Decoder, Encoder};
pub use error::TraceError;
pub use event::{to_hex, EndReason, Event, EventKind, RandomSource, Regs, UserReadKind};
pub use header::{
    Completion, CpuidEntry, CpuidTable, Header, KernelInfo, SnapshotRef, VmConfig, FORMAT_VERSION,
};
pub use reader::{BlockInfo, Damage, EventIter, EventStream, TraceEvent, TraceReader};
pub use writer::{TraceWriter, WriteSummary, WriterOptions};

/// File names inside a trace directory.
pub const HEADER_FILE: &str = "header";
pub const EVENTS_FILE: &str = "events";
pub const SNAPSHOT_FILE: &str = "snapshot";
pub const CONSOLE_FILE: &str = "console";
