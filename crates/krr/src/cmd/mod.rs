//! One module per subcommand.

pub mod bench;
pub mod doctor;
pub mod dump;
pub mod emu_coverage;
pub mod gdb;
pub mod guest;
pub mod record;
pub mod replay;
pub mod run;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// Set by the first Ctrl-C or SIGTERM: the run stops and a recording is sealed. A second one
/// ends krr at once.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag before this signal sets it: the second signal exits.
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(FLAG.get_or_init(|| flag).clone())
}
