//! `krr replay --gdb ADDR` (a GDB server over the replay) and `krr gdbinit`.

use std::path::Path;
use std::process::ExitCode;

use krr_gdb::{Address, Listener, ReplayTarget, SessionInfo, Timeline};
use krr_replay::{Replayer, Session, Trace};

/// Steps between periodic checkpoints, and how many are kept (docs/gdb.md).
const CHECKPOINT_INTERVAL: u64 = 1 << 20;
const CHECKPOINTS: usize = 256;

/// Print a gdb script defining `when`, `checkpoint`, `restart`, `krr-goto` and `krr-info` as
/// wrappers of krr's `monitor` commands.
///
/// Use: `krr gdbinit > krr.gdb`, then `source krr.gdb` in gdb (or `-x krr.gdb`).
#[derive(Debug, clap::Args)]
pub struct GdbinitArgs {}

pub fn gdbinit(_args: GdbinitArgs) -> anyhow::Result<ExitCode> {
    print!("{}", krr_gdb::GDBINIT);
    Ok(ExitCode::SUCCESS)
}

pub fn serve(r: Replayer<'_>, trace: &Trace, vmlinux: &Path, addr: &str) -> anyhow::Result<ExitCode> {
    let listener = Listener::bind(&Address::parse(addr))?;
    let at = listener.address();
    let session = match Session::new(r) {
        Ok(s) => s,
        Err(d) => {
            eprint!("{d}");
            return Ok(ExitCode::from(3));
        }
    };
    let info = SessionInfo {
        lines: vec![
            format!("trace: {}", trace.dir.display()),
            format!("kernel: {} (build-id {})", vmlinux.display(), trace.header.kernel.build_id),
            format!(
                "events: {}{}, console {} bytes",
                trace.events.len(),
                if trace.complete { "" } else { " (incomplete trace)" },
                trace.console.len()
            ),
            "vCPUs: 1".into(),
        ],
    };
    let mut target = ReplayTarget::new(Timeline::new(session, CHECKPOINT_INTERVAL, CHECKPOINTS), info);
    eprintln!("krr replay: waiting for gdb on {}; connect with:", at.gdb_spec());
    eprintln!("  gdb {} -ex 'target remote {}'", vmlinux.display(), at.gdb_spec());
    let conn = listener.accept()?;
    eprintln!("krr replay: gdb connected");
    let reason = krr_gdb::serve(&mut target, conn)?;
    eprintln!("krr replay: gdb session ended ({reason:?}); {}", target.when());
    Ok(ExitCode::SUCCESS)
}
