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

/// The gdb command line to paste. When the kernel's gdb scripts are beside the vmlinux (a krr
/// guest build has them), the line adds their directory to gdb's auto-load safe path, so gdb
/// loads `vmlinux-gdb.py` with the kernel and `lx-dmesg`, `lx-ps`, ... work at once.
fn connect_line(vmlinux: &Path, remote: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let dir = vmlinux.parent().filter(|d| d.join("vmlinux-gdb.py").is_file());
    let safe_path = match dir {
        Some(d) => format!("-iex {} ", quote(&format!("add-auto-load-safe-path {}", d.display()))),
        None => String::new(),
    };
    format!(
        "gdb {safe_path}{} -ex {}",
        quote(&vmlinux.display().to_string()),
        quote(&format!("target remote {remote}"))
    )
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
    eprintln!("  {}", connect_line(vmlinux, &at.gdb_spec()));
    let conn = listener.accept()?;
    eprintln!("krr replay: gdb connected");
    let reason = krr_gdb::serve(&mut target, conn)?;
    eprintln!("krr replay: gdb session ended ({reason:?}); {}", target.when());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_line_auto_loads_the_kernel_scripts_when_they_are_beside_vmlinux() {
        let tmp = tempfile::tempdir().unwrap();
        let vmlinux = tmp.path().join("vmlinux");
        std::fs::write(&vmlinux, b"").unwrap();
        let bare = connect_line(&vmlinux, ":1234");
        assert_eq!(bare, format!("gdb '{}' -ex 'target remote :1234'", vmlinux.display()));
        std::fs::write(tmp.path().join("vmlinux-gdb.py"), b"").unwrap();
        let line = connect_line(&vmlinux, "/tmp/krr.sock");
        assert_eq!(
            line,
            format!(
                "gdb -iex 'add-auto-load-safe-path {}' '{}' -ex 'target remote /tmp/krr.sock'",
                tmp.path().display(),
                vmlinux.display()
            )
        );
        assert_eq!(connect_line(Path::new("/a b/it's"), ":1"), "gdb '/a b/it'\\''s' -ex 'target remote :1'");
    }
}
