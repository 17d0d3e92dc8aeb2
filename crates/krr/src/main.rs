//! `krr`: record the Linux kernel on KVM (or krr's own emulator) and replay it deterministically.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Record and replay the execution of a Linux guest kernel.
///
/// krr boots a Linux guest under its own VMM, records only the inputs that cross into the guest
/// kernel, and replays that kernel deterministically on its own x86-64 emulator.
#[derive(Debug, Parser)]
#[command(name = "krr", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the guest kernel and initramfs (cached outside the repository).
    Guest(cmd::guest::GuestArgs),
    /// Report what this host offers: KVM usable for Linux guests? PMU? emulator speed.
    Doctor(cmd::doctor::DoctorArgs),
    Record(cmd::record::RecordArgs),
    Replay(cmd::replay::ReplayArgs),
    Run(cmd::run::RunArgs),
    /// Print the events, console lines and statistics of a trace.
    Dump(cmd::dump::DumpArgs),
    /// Report which instructions of a vmlinux or ELF program krr-emu implements.
    EmuCoverage(cmd::emu_coverage::EmuCoverageArgs),
    /// Print a gdb script defining `when`, `checkpoint`, `restart` for `krr replay --gdb`.
    Gdbinit(cmd::gdb::GdbinitArgs),
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics behind RUST_LOG (e.g. RUST_LOG=krr_vmm=debug, krr_replay=trace): VM exits,
    // port I/O, ring flushes, lock hand-offs, replayed events. Silent otherwise.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let result = match cli.command {
        Command::Guest(args) => cmd::guest::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Record(args) => cmd::record::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Dump(args) => cmd::dump::run(args),
        Command::EmuCoverage(args) => cmd::emu_coverage::run(args),
        Command::Gdbinit(args) => cmd::gdb::gdbinit(args),
        Command::Bench(args) => cmd::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `krr dump ... | head`: the reader went away, which is not an error worth a message.
            let broken_pipe = err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            // One line: the error and its causes, outermost first.
            eprintln!("krr: {err:#}");
            ExitCode::FAILURE
        }
    }
}
