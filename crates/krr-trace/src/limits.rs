//! Limits every reader enforces before allocating, and every writer enforces before writing.
//! They are part of the format (docs/trace-format.md).

/// Largest data payload of one event (user-memory read, DMA bytes). Larger reads are split by
/// the recorder.
pub const MAX_EVENT_DATA: usize = 16 << 20;
/// Largest uncompressed block.
pub const MAX_BLOCK_RAW: usize = 32 << 20;
/// Largest stored (compressed) block.
pub const MAX_BLOCK_STORED: usize = MAX_BLOCK_RAW + (1 << 16);
/// Largest header body (JSON).
pub const MAX_HEADER_BODY: usize = 16 << 20;
/// vCPU numbers are below this.
pub const MAX_VCPUS: u32 = 256;
/// Largest block size target a writer accepts.
pub const MAX_BLOCK_TARGET: usize = 8 << 20;
