//! One module per subcommand.

pub mod dump;
pub mod emu_coverage;
pub mod guest;
pub mod unimplemented;
