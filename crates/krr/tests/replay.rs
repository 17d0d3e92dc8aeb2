//! `krr replay` end to end: workloads recorded on the `emu` backend replay on krr-emu with no
//! divergence and the same console; replay is deterministic; a trace with one input changed
//! fails with exit 3 and a report; bad traces are one-line errors. These tests fail, not skip,
//! when the guest is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{guest_dir, perturbed};
use krr_trace::{Event, TraceReader};

fn krr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_krr"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn record(trace: &Path, workload: &str) {
    let out = common::record_emu(trace, workload);
    assert_eq!(out.status.code(), Some(0), "record {workload}: {}", text(&out.stderr));
}

fn replay(trace: &Path, extra: &[&str]) -> Output {
    krr()
        .arg("replay")
        .arg(trace)
        .arg("--vmlinux")
        .arg(guest_dir().join("vmlinux"))
        .args(extra)
        .output()
        .unwrap()
}

fn summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

fn events_of(trace: &Path) -> Vec<Event> {
    TraceReader::open(trace).unwrap().events().map(|e| e.unwrap().event).collect()
}

/// A recording of `workload` in a new temporary directory (kept alive by the first value).
fn recorded(workload: &str) -> (tempfile::TempDir, PathBuf, Vec<Event>) {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join(workload);
    record(&trace, workload);
    let events = events_of(&trace);
    (tmp, trace, events)
}

/// Replays `trace` (`what` names it in failures): exit 0, no divergence, the same console and
/// all of its `events` consumed. Returns the JSON summary.
fn replays_in_full(trace: &Path, events: usize, what: &str) -> serde_json::Value {
    let out = replay(trace, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
    let s = summary(&out);
    assert_eq!(s["diverged"], false, "{what}: {s}");
    assert_eq!(s["console_match"], true, "{what}: {s}");
    assert_eq!(s["events"], events as u64, "{what}: every event consumed: {s}");
    s
}

#[test]
fn workloads_replay_without_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    for w in [
        "hello", "forkexec", "signals", "timers", "futex", "efault", "procfs", "mmap", "pipes", "fileio",
        "epoll",
    ] {
        let trace = tmp.path().join(w);
        record(&trace, w);
        let events = events_of(&trace);
        let s = replays_in_full(&trace, events.len(), w);
        if w == "signals" {
            // arch_prctl(ARCH_GET_FS) reads an MSR the emulator keeps itself; the hook consumed it.
            assert!(
                events.iter().any(|e| matches!(e, Event::Rdmsr { msr: 0xc000_0100, .. })),
                "FS_BASE read logged"
            );
        }
        assert!(s["instructions"].as_u64().unwrap() > 100_000, "{w}: {s}");
    }
}

/// io_uring's rings are kernel pages user space writes while the kernel reads them (SQ tail,
/// SQ array, SQEs, CQ head, the provided-buffer ring's tail and entries); replay runs no user
/// code, so every such read must be logged (`io_uring_sq` user reads) for the kernel to see the
/// same submissions.
#[test]
fn io_uring_rings_replay() {
    let (_tmp, trace, events) = recorded("iouring");
    let ring_reads = |len: usize| {
        events
            .iter()
            .filter(|e| {
                matches!(e, Event::UserRead { read: krr_trace::UserReadKind::IoUringSq, data, .. } if data.len() == len)
            })
            .count()
    };
    // 16 rounds of two SQEs, one read, three buffer-select reads: 36 SQEs of 64 bytes, and
    // the three buffer-ring entries (16 bytes) the kernel took.
    assert!(ring_reads(64) >= 36, "SQEs logged: {}", ring_reads(64));
    assert!(ring_reads(16) >= 3, "buffer-ring entries logged: {}", ring_reads(16));
    assert!(ring_reads(4) >= 36, "SQ tail, SQ array and CQ head reads logged: {}", ring_reads(4));
    replays_in_full(&trace, events.len(), "iouring");
}

/// The accessed and dirty bits the CPU sets in user PTEs while user code runs exist only in the
/// recording (replay skips user code). `ptebits` makes the kernel read them through smaps,
/// pagemap, clear_refs, /proc/self/mem (GUP) and madvise (MADV_COLD/PAGEOUT/FREE): every such
/// read must be a logged PTE read, or the kernel takes other paths in replay (the soak issue's
/// /proc reader diverged so, in `smaps_pte_entry`).
#[test]
fn kernel_reads_of_user_pte_access_bits_replay() {
    let (_tmp, trace, events) = recorded("ptebits");
    let ptes = events.iter().filter(|e| matches!(e, Event::PteRead { .. })).count();
    assert!(ptes > 5_000, "the walks read user PTEs through the hook: {ptes} PTE reads");
    replays_in_full(&trace, events.len(), "ptebits");
}

/// What a user brings: a host directory (`--add`) and a program from a Debian package with its
/// 26 shared libraries and ELF interpreter (`--add-bin stress-ng`; scripts/setup.sh installs
/// it), put into the guest in an archive appended to the initramfs. The recording runs them
/// and replays in full.
#[test]
fn added_files_and_a_dynamically_linked_debian_program_record_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/note.txt"), "written on the host\n").unwrap();
    let trace = tmp.path().join("stress-ng");
    let add = format!("{}:/root/data", data.display());
    let out = common::record_emu_with(
        &trace,
        &["--add", &add, "--add-bin", "stress-ng"],
        &["/bin/sh", "-c", "cat /root/data/sub/note.txt && stress-ng --fork 1 --fork-ops 50 --metrics-brief"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "record: {stderr}");
    let libs: u32 = stderr
        .split(" shared objects")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary of the added files: {stderr}"));
    assert!(libs >= 20, "stress-ng's libraries and interpreter were added: {libs}");
    let console = String::from_utf8_lossy(&std::fs::read(trace.join("console")).unwrap()).into_owned();
    assert!(console.contains("written on the host"), "{console}");
    assert!(console.contains("successful run completed"), "{console}");
    replays_in_full(&trace, events_of(&trace).len(), "stress-ng");
}

/// A reproducer compiled on the host (dynamically linked against the host's libc) and added
/// with `--add-bin PATH`: it runs in the guest as `/usr/bin/NAME` and the recording replays.
#[test]
fn a_c_program_compiled_on_the_host_records_and_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("repro.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\n#include <fcntl.h>\n\
         int main(void) { char b[64]; int fd = open(\"/proc/self/stat\", O_RDONLY);\n\
         ssize_t n = read(fd, b, sizeof b); printf(\"repro: read %zd bytes, pid %d\\n\", n, getpid());\n\
         return n > 0 ? 0 : 1; }\n",
    )
    .unwrap();
    let bin = tmp.path().join("repro");
    let cc =
        std::process::Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src).output().expect("run cc");
    assert!(cc.status.success(), "cc: {}", text(&cc.stderr));
    let trace = tmp.path().join("repro-trace");
    let out = common::record_emu_with(&trace, &["--add-bin", bin.to_str().unwrap()], &["/usr/bin/repro"]);
    assert_eq!(out.status.code(), Some(0), "record: {}", text(&out.stderr));
    let console = String::from_utf8_lossy(&std::fs::read(trace.join("console")).unwrap()).into_owned();
    assert!(console.contains("repro: read 64 bytes"), "{console}");
    replays_in_full(&trace, events_of(&trace).len(), "repro");
}

/// A kernel that panics: the panic messages, the call trace and the panic hook replay like any
/// other kernel code.
#[test]
fn a_panic_replays_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("panic");
    let rec = common::record_emu(&trace, "panic");
    assert_eq!(rec.status.code(), Some(125), "the guest was meant to panic: {}", text(&rec.stderr));
    let events = events_of(&trace);
    replays_in_full(&trace, events.len(), "panic");
}

#[test]
fn replay_is_deterministic_and_checks_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("timers");
    record(&trace, "timers");
    let a = summary(&replay(&trace, &["--json"]));
    let b = summary(&replay(&trace, &["--json"]));
    assert_eq!(a["instructions"], b["instructions"]);
    assert_eq!(a["digest"], b["digest"]);
    assert!(a["digest"].is_string(), "{a}");

    let events = events_of(&trace);
    let find = |f: &dyn Fn(&Event) -> bool| events.iter().position(f).map(|i| i as u64).unwrap();

    // An interrupt moved to a position the kernel reaches only after its next logged input:
    // replay never finds it there. (Not +1: on emu, kernel-mode interrupts land at the entry of
    // the position counter's callback or in the idle HLT, and two consecutive callback entries
    // can carry the same GPRs, so a one-block shift can be indistinguishable there, and as
    // harmless; the kernel change that gave this trace such a first interrupt made +1 replay
    // clean.)
    let irq = find(&|e| matches!(e, Event::Interrupt { regs, .. } if regs.rip >= 0xffff_8000_0000_0000));
    let moved = tmp.path().join("moved-irq");
    perturbed(&trace, &moved, |i, e| {
        if let (true, Event::Interrupt { pos, .. }) = (i == irq, e) {
            *pos += 10_000_000;
        }
    });
    let out = replay(&moved, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let at: u64 =
        err.split("diverged at event ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!(at >= irq, "reported event {at} is before the changed one {irq}: {err}");
    assert!(err.contains("last events:"), "{err}");

    // A TSC value the kernel read (time goes backwards by a second there): the kernel's timekeeping
    // takes another path.
    let tsc =
        events.iter().enumerate().filter(|(_, e)| matches!(e, Event::Rdtsc { .. })).nth(20).unwrap().0 as u64;
    let rdtsc = tmp.path().join("rdtsc");
    perturbed(&trace, &rdtsc, |i, e| {
        if let (true, Event::Rdtsc { tsc, .. }) = (i == tsc, e) {
            *tsc = tsc.wrapping_sub(1_000_000_000);
        }
    });
    let out = replay(&rdtsc, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    if let Some(s) = err.split("diverged at event ").nth(1) {
        let at: u64 = s.split(' ').next().unwrap().parse().unwrap();
        assert!(at > tsc, "reported event {at}, changed {tsc}: {err}");
    }

    // A byte the kernel read from user memory: the workload's output changes.
    let write = events
        .iter()
        .position(|e| matches!(e, Event::UserRead { data, .. } if data.starts_with(b"timers: ")))
        .expect("the write() of the workload's first line") as u64;
    let flipped = tmp.path().join("flipped-byte");
    perturbed(&trace, &flipped, |i, e| {
        if let (true, Event::UserRead { data, .. }) = (i == write, e) {
            data[0] = b'T';
        }
    });
    let out = replay(&flipped, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("console"), "{err}");

    // A port read of another port than the kernel asks for.
    let port = find(&|e| matches!(e, Event::PortRead { .. }));
    let wrong_port = tmp.path().join("wrong-port");
    perturbed(&trace, &wrong_port, |i, e| {
        if let (true, Event::PortRead { port, .. }) = (i == port, e) {
            *port ^= 1;
        }
    });
    let out = replay(&wrong_port, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("diverged at event {port} ")), "{err}");
}

#[test]
fn bad_traces_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("hello");
    record(&trace, "hello");
    let one_line = |out: Output, needle: &str| {
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(needle), "wanted {needle:?} in {e}");
    };
    // Another kernel: a copy of vmlinux with a different build-id.
    let other = tmp.path().join("vmlinux-other");
    let mut bytes = std::fs::read(guest_dir().join("vmlinux")).unwrap();
    let id = std::fs::read_to_string(guest_dir().join("build-id")).unwrap();
    let id: Vec<u8> = (0..id.trim().len() / 2)
        .map(|i| u8::from_str_radix(&id.trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let at = bytes.windows(id.len()).position(|w| w == id.as_slice()).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&other, bytes).unwrap();
    one_line(
        krr().arg("replay").arg(&trace).arg("--vmlinux").arg(&other).output().unwrap(),
        "not the kernel",
    );
    // A damaged snapshot.
    let damaged = copy_dir(&trace, &tmp.path().join("damaged"));
    let mut snap = std::fs::read(damaged.join("snapshot")).unwrap();
    let n = snap.len();
    snap[n / 2] ^= 1;
    std::fs::write(damaged.join("snapshot"), snap).unwrap();
    one_line(replay(&damaged, &[]), "snapshot");
    // A missing snapshot.
    let missing = copy_dir(&trace, &tmp.path().join("missing"));
    std::fs::remove_file(missing.join("snapshot")).unwrap();
    one_line(replay(&missing, &[]), "snapshot");
    // Not a trace.
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("header"), b"garbage").unwrap();
    one_line(replay(&junk, &[]), "junk");
}

/// The header names the CPU vendor whose answers the recording saw; replay follows it, refuses
/// a vendor krr-emu has no profile for in one line, and runs one with `--cpu-profile`.
#[test]
fn the_recorded_cpu_vendor_picks_the_replay_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("hello");
    record(&trace, "hello");
    let header = krr_trace::Header::read(&trace.join("header")).unwrap();
    assert_eq!(header.vm.cpu_vendor, "GenuineIntel", "the emu backend's CPU is an Intel one");
    let other = copy_dir(&trace, &tmp.path().join("hygon"));
    let mut h = header.clone();
    h.vm.cpu_vendor = "HygonGenuine".into();
    h.write_atomic(&other.join("header")).unwrap();
    let out = replay(&other, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("\"HygonGenuine\"") && err.contains("--cpu-profile"), "{err}");
    let out = replay(&other, &["--cpu-profile", "intel", "--json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("recorded on a HygonGenuine CPU; replaying with krr-emu's intel profile"), "{err}");
    assert_eq!(summary(&out)["diverged"], false);
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
    to.to_owned()
}
