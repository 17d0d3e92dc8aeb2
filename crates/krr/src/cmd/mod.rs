//! One module per subcommand.

pub mod doctor;
pub mod dump;
pub mod emu_coverage;
pub mod guest;
pub mod run;
pub mod unimplemented;
