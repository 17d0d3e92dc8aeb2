//! `krr record` end to end on the `emu` backend: every guest workload is recorded with the real
//! guest kernel (its agent patch) and the trace is read back with `krr dump`: the event kinds
//! each workload must produce, the console against `krr run`, panics, interruption, a killed
//! recorder. These tests fail, not skip, when the guest is missing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{guest_dir, kernel_args};

fn krr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_krr"))
}

fn vm_args(cmd: &mut Command) -> &mut Command {
    cmd.args(["--quiet", "--accel", "emu"]).args(kernel_args()).args(["--timeout", "600"])
}

fn record(trace: &Path, cmd: &[&str]) -> Output {
    let mut c = krr();
    c.arg("record").arg("-o").arg(trace);
    vm_args(&mut c).arg("--").args(cmd).output().expect("run krr record")
}

fn run(cmd: &[&str]) -> Output {
    let mut c = krr();
    c.arg("run");
    vm_args(&mut c).arg("--").args(cmd).output().expect("run krr run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `krr dump --json` of a whole trace: one JSON value per event or console line.
fn events(trace: &Path) -> Vec<serde_json::Value> {
    let out = krr().arg("dump").arg(trace).arg("--json").output().unwrap();
    assert!(out.status.success(), "krr dump: {}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Events per kind, from `krr dump --stats --json`.
fn kinds(trace: &Path) -> BTreeMap<String, u64> {
    let out = krr().arg("dump").arg(trace).arg("--stats").arg("--json").output().unwrap();
    assert!(out.status.success(), "krr dump --stats: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["kinds"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["events"].as_u64().unwrap())).collect()
}

/// The console text inside a trace.
fn trace_console(trace: &Path) -> String {
    text(&std::fs::read(trace.join("console")).unwrap())
}

/// Console lines without what legitimately differs between a recorded and an unrecorded run:
/// the kernel's printk timestamps (the agent's hooks execute instructions, and virtual time
/// counts them) and the `krr.ring=` parameter on the kernel command line.
fn without_timestamps(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| match (l.starts_with('['), l.find("] ")) {
            (true, Some(i)) => l[i + 2..].to_string(),
            _ => l.to_string(),
        })
        .map(|l| match l.find(" krr.ring=") {
            Some(i) => {
                let end = l[i + 1..].find(' ').map_or(l.len(), |j| i + 1 + j);
                format!("{}{}", &l[..i], &l[end..])
            }
            None => l,
        })
        .collect()
}

fn user_reads<'a>(evs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["kind"] == "user_read" && e["read"] == kind).collect()
}

/// Record `workload`, check it passed and produced `must` event kinds, and that the trace's
/// console is what `krr run` printed for it.
fn record_workload(workload: &str, must: &[&str]) -> (PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join(workload);
    let bin = format!("/bin/{workload}");
    let out = record(&trace, &[&bin]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{workload}: {stderr}\n{}", text(&out.stdout));
    assert!(stderr.contains("end reason poweroff"), "{stderr}");
    let k = kinds(&trace);
    for m in ["start", "syscall", "exception", "pte_read", "end"].iter().chain(must) {
        assert!(k.get(*m).copied().unwrap_or(0) > 0, "{workload}: no {m} events: {k:?}");
    }
    // The console in the trace is what `krr run` printed from /init on.
    let ran = run(&[&bin]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let recorded = without_timestamps(&trace_console(&trace));
    let printed = without_timestamps(&text(&ran.stdout));
    // Recording starts just before the kernel prints `Run /init`; `krr run --quiet` prints
    // what follows that line.
    assert!(recorded[0].starts_with("Run /init as init process"), "{recorded:?}");
    assert_eq!(recorded[1..], printed[..], "{workload}: console differs from krr run");
    (trace, tmp)
}

#[test]
fn hello_records_syscalls_and_user_reads() {
    let (trace, _tmp) = record_workload("hello", &["user_read", "rdtsc"]);
    let evs = events(&trace);
    // execve's argument strings are read with strncpy_from_user/strnlen_user.
    assert!(!user_reads(&evs, "strncpy_from_user").is_empty());
    assert!(!user_reads(&evs, "strnlen_user").is_empty());
    // The first event is the start, the last the end.
    assert_eq!(evs.first().unwrap()["kind"], "start");
    assert_eq!(evs.iter().rev().find(|e| e.get("kind").is_some()).unwrap()["kind"], "end");
    // Every syscall carries a plausible user RIP and the syscall number in RAX.
    for s in evs.iter().filter(|e| e["kind"] == "syscall") {
        let rip = s["regs"]["rip"].as_u64().unwrap();
        assert!(rip > 0x1000 && rip < 0x8000_0000_0000, "{s}");
        assert!(s["regs"]["rax"].as_u64().unwrap() < 512, "{s}");
    }
}

#[test]
fn forkexec_records_faults_and_copies() {
    let (trace, _tmp) = record_workload("forkexec", &["user_read", "interrupt"]);
    let evs = events(&trace);
    assert!(!user_reads(&evs, "copy_from_user").is_empty());
    // User page faults carry their address in CR2 and a user RIP.
    let pf: Vec<_> = evs.iter().filter(|e| e["kind"] == "exception" && e["vector"] == 14).collect();
    assert!(pf.len() > 10, "{} page faults", pf.len());
    assert!(pf.iter().all(|e| e["cr2"].as_u64().unwrap() < 0x8000_0000_0000));
    // Copy-on-write after fork reads the parent's anonymous pages.
    assert!(!user_reads(&evs, "kmap_anon").is_empty());
}

#[test]
fn futex_records_futex_words() {
    let (trace, _tmp) = record_workload("futex", &["user_read"]);
    assert!(!user_reads(&events(&trace), "futex").is_empty());
}

#[test]
fn signals_record_the_handled_segfault() {
    let (trace, _tmp) = record_workload("signals", &["user_read"]);
    let evs = events(&trace);
    // The SIGSEGV the program handles is a user #PF at an unmapped address.
    assert!(evs.iter().any(|e| e["kind"] == "exception"
        && e["vector"] == 14
        && e["error_code"].as_u64().unwrap() & 1 == 0));
    // rt_sigreturn reads the signal frame back with copy_from_user.
    assert!(!user_reads(&evs, "copy_from_user").is_empty());
}

#[test]
fn timers_record_interrupts_with_positions() {
    let (trace, _tmp) = record_workload("timers", &["interrupt", "rdtsc"]);
    let evs = events(&trace);
    let irqs: Vec<_> = evs.iter().filter(|e| e["kind"] == "interrupt").collect();
    // Timer interrupts that land in the kernel carry a position and a kernel RIP.
    let kernel: Vec<_> =
        irqs.iter().filter(|e| e["regs"]["rip"].as_u64().unwrap() >= 0xffff_8000_0000_0000).collect();
    assert!(!kernel.is_empty(), "no interrupt in kernel mode among {}", irqs.len());
    assert!(kernel.iter().all(|e| e["pos"].as_u64().unwrap() > 0));
}

#[test]
fn efault_records_the_short_copy() {
    let (trace, _tmp) = record_workload("efault", &["user_read"]);
    // A copy_from_user that faults midway logs only the bytes it copied, ending at the
    // unmapped page.
    let evs = events(&trace);
    let short = user_reads(&evs, "copy_from_user").into_iter().any(|e| {
        let end = e["addr"].as_u64().unwrap() + e["data"].as_str().unwrap().len() as u64 / 2;
        end % 4096 == 0 && !e["data"].as_str().unwrap().is_empty()
    });
    assert!(short, "no copy_from_user ending at a page boundary");
}

#[test]
fn other_workloads_record() {
    for (w, must) in [
        ("fileio", &["user_read"][..]),
        ("pipes", &["user_read"][..]),
        ("mmap", &["user_read"][..]),
        ("procfs", &["user_read"][..]),
        ("epoll", &["user_read"][..]),
    ] {
        record_workload(w, must);
    }
}

#[test]
fn panic_trace_ends_in_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("panic");
    let out = record(&trace, &["/bin/panic"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("guest kernel panic"), "{stderr}");
    assert!(stderr.contains("end reason panic"), "{stderr}");
    let console = trace_console(&trace);
    assert!(console.contains("Kernel panic - not syncing: sysrq triggered crash"), "{console}");
    // The panic's own messages (the oops and the call trace) are in the trace.
    assert!(console.contains("Call Trace:"), "{console}");
    let evs = events(&trace);
    let end = evs.iter().rev().find(|e| e.get("kind").is_some()).unwrap();
    assert_eq!(end["reason"], "panic");
}

/// A recording of a workload that never ends, once its first block of events is written.
fn endless_recording(trace: &Path) -> Child {
    let mut c = krr();
    c.arg("record").arg("-o").arg(trace);
    let mut child = vm_args(&mut c)
        .args(["--", "/bin/sh", "-c", "while :; do /bin/hello >/dev/null; done"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let len = std::fs::metadata(trace.join("events")).map(|m| m.len()).unwrap_or(0);
        if len > 4096 && trace.join("snapshot").exists() {
            return child;
        }
        assert!(child.try_wait().unwrap().is_none(), "the recorder ended early");
        assert!(t0.elapsed() < Duration::from_secs(300), "no events after 300 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn interrupted_recording_is_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t");
    let child = endless_recording(&trace);
    // Ctrl-C, as a terminal would send it.
    let st = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("end reason interrupted"), "{stderr}");
    let k = kinds(&trace);
    assert!(k["syscall"] > 0 && k["end"] == 1, "{k:?}");
}

#[test]
fn killed_recorder_leaves_a_readable_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t");
    let mut child = endless_recording(&trace);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The trace is incomplete but every written block reads.
    let out = krr().arg("dump").arg(&trace).arg("--stats").output().unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("complete: no"), "{stdout}\n{stderr}");
    let k = kinds(&trace);
    assert!(k.get("syscall").copied().unwrap_or(0) > 0, "{k:?}");
    assert!(!k.contains_key("end"), "{k:?}");
    // Its valid events replay: the kernel stops wherever it is after the last one.
    let out = krr()
        .arg("replay")
        .arg(&trace)
        .arg("--json")
        .arg("--vmlinux")
        .arg(guest_dir().join("vmlinux"))
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((v["diverged"].as_bool(), v["complete"].as_bool()), (Some(false), Some(false)), "{stdout}");
    assert!(stderr.contains("is incomplete"), "{stderr}");
}

/// A full disk while recording: one line naming the file and ENOSPC, exit 1, and the trace keeps
/// every block written before (the start snapshot fits; the events overflow a 3,800 KiB tmpfs).
/// Needs root to mount the tmpfs, so it is `#[ignore]`d; `scripts/test.sh` runs it as root.
#[test]
#[ignore = "needs root (mounts a small tmpfs)"]
fn a_full_disk_is_one_line_and_keeps_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    // A disk with room for the start snapshot and a few blocks of events: sized from a recording
    // of hello (the snapshot's size follows the guest kernel's and varies a little from run to
    // run), for a workload that writes over a megabyte of events.
    let sizing = tmp.path().join("sizing");
    let out = record(&sizing, &["/bin/hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let snapshot = std::fs::metadata(sizing.join("snapshot")).unwrap().len();
    let size_k = snapshot / 1024 + 256;
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_k}K"), "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {} (run as root)", mnt.display());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let trace = mnt.join("t");
    let out = record(&trace, &["/bin/sh", "-c", "for i in $(seq 20); do /bin/forkexec >/dev/null; done"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("No space left on device") && e.contains("events"), "{e}");
    // What was written before the disk filled reads: the snapshot and the first blocks.
    assert!(trace.join("snapshot").exists());
    // The last block was cut short by the full disk: krr dump shows the events before it and
    // says where the damage starts (exit 1).
    let out = krr().arg("dump").arg(&trace).arg("--stats").output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("complete: no"), "{stdout}\n{stderr}");
    assert!(stderr.contains("events before it are intact"), "{stderr}");
    let syscalls = stdout.lines().find(|l| l.starts_with("syscall")).unwrap_or_default();
    let n: u64 = syscalls.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(n > 0, "{stdout}");
}

#[test]
fn bad_requests_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // More than eight vCPUs.
    for args in [&["--smp", "9"][..], &["--smp", "0"][..]] {
        let mut c = krr();
        c.arg("record").arg("-o").arg(tmp.path().join("a")).args(args);
        let out = vm_args(&mut c).args(["--", "/bin/hello"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let e = text(&out.stderr);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(&format!("--smp {}", args[1])), "{e}");
        assert!(!tmp.path().join("a").exists(), "{args:?}");
    }
    // --emu-seed is an emu option: with kvm it is an error, said before anything runs.
    let out = krr()
        .args(["record", "--quiet", "--accel", "kvm", "--emu-seed", "1", "-o"])
        .arg(tmp.path().join("b"))
        .args(kernel_args())
        .args(["--", "/bin/hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("--emu-seed") && e.contains("kvm"), "{e}");
    // A directory that holds something is never overwritten.
    std::fs::write(tmp.path().join("keep"), b"x").unwrap();
    let mut c = krr();
    c.arg("record").arg("-o").arg(tmp.path());
    let out = vm_args(&mut c).args(["--", "/bin/hello"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an empty directory"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(tmp.path().join("keep")).unwrap(), b"x");
    // A kernel without the agent cannot record: said before booting it.
    let not_agent = tmp.path().join("not-a-krr-kernel");
    std::fs::copy(env!("CARGO_BIN_EXE_krr"), &not_agent).unwrap();
    let out = krr()
        .arg("record")
        .arg("-o")
        .arg(tmp.path().join("b"))
        .args(["--accel", "emu", "--kernel"])
        .arg(&not_agent)
        .arg("--initrd")
        .arg(guest_dir().join("initramfs.cpio"))
        .args(["--", "/bin/hello"])
        .output()
        .unwrap();
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("no krr guest agent"), "{e}");
}

/// Boot once, record many times: `krr record --save-snapshot` saves a recording-ready VM before
/// the agent's late start; each `krr record --from-snapshot` resumes it and records the end of
/// the boot and the workload, and the traces replay. Snapshots that cannot be recorded from are
/// one-line errors.
#[test]
fn recordings_from_a_saved_vm_replay() {
    let tmp = tempfile::tempdir().unwrap();
    // `krr record --start late` saving the VM to `snap` at the console line `at`.
    let save = |snap: &Path, at: &str| {
        let mut c = krr();
        c.args(["record", "--start", "late", "--save-snapshot"])
            .arg(snap)
            .args(["--snapshot-on-console", at]);
        vm_args(&mut c).args(["--", "/bin/true"]).output().unwrap()
    };
    let snap = tmp.path().join("late.snap");
    let out = save(&snap, "Unpacking initramfs");
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(e.contains("saved the recording-ready VM to"), "{e}");
    assert!(snap.metadata().unwrap().len() > 0);

    let mut counts = Vec::new();
    for i in 0..2 {
        let trace = tmp.path().join(format!("t{i}"));
        let mut c = krr();
        c.args(["record", "--from-snapshot"]).arg(&snap).arg("-o").arg(&trace);
        let out = vm_args(&mut c).args(["--", "/bin/hello"]).output().unwrap();
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{e}");
        assert!(text(&out.stdout).contains("hello from the krr guest"), "{}", text(&out.stdout));
        // The recording began after the last initcall: the rest of the boot is in its console.
        let console = trace_console(&trace);
        assert!(
            console.contains("Freeing unused kernel image") && console.contains("Run /init"),
            "{console}"
        );
        let header = krr().arg("dump").arg(&trace).arg("--header").output().unwrap();
        assert!(text(&header.stdout).contains("krr.start=late"), "{}", text(&header.stdout));
        let k = kinds(&trace);
        assert!(k.get("syscall").copied().unwrap_or(0) > 0, "{k:?}");
        let rep = krr().arg("replay").arg(&trace).arg("--json").output().unwrap();
        assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
        let s: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
        assert_eq!((s["diverged"].clone(), s["console_match"].clone()), (false.into(), true.into()), "{s}");
        counts.push(events(&trace).len());
    }
    // The emulator is deterministic: both recordings from the one snapshot are the same run.
    assert_eq!(counts[0], counts[1]);

    // A VM saved by `krr run` has no ring for the agent.
    let plain = tmp.path().join("plain.snap");
    let mut c = krr();
    c.arg("run").arg("--save-snapshot").arg(&plain);
    let out = vm_args(&mut c).args(["--", "/bin/true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut c = krr();
    c.args(["record", "--from-snapshot"]).arg(&plain).arg("-o").arg(tmp.path().join("t-plain"));
    let out = vm_args(&mut c).args(["--", "/bin/hello"]).output().unwrap();
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("not saved by `krr record --save-snapshot`"), "{e}");
    assert!(!tmp.path().join("t-plain").exists());

    // Saving after the agent started would lose the start: refused, nothing saved.
    let late = tmp.path().join("too-late.snap");
    let out = save(&late, "Run /init");
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("already started recording"), "{e}");
    assert!(!late.exists());
}

#[test]
fn record_json_summary_is_the_last_stdout_line_and_counts_the_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t");
    let out = vm_args(krr().args(["record", "--json", "-o"]).arg(&trace))
        .args(["--", "sh", "-c", "echo one; echo two; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The console reaches stdout with plain \n line ends (the trace keeps the UART's \r\n).
    assert!(!stdout.contains('\r'), "{stdout:?}");
    assert!(stdout.starts_with("one\ntwo\n"), "{stdout:?}");
    assert!(trace_console(&trace).contains("one\r\ntwo\r\n"));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "exited");
    assert_eq!(summary["exit_code"], 3);
    assert_eq!(summary["accel"], "emu");
    let stats = krr().args(["dump", "--stats", "--json"]).arg(&trace).output().unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(summary["trace"]["events"], stats["events"], "{summary} vs {stats}");
    assert_eq!(summary["trace"]["end_reason"], "poweroff");
    assert_eq!(summary["trace"]["dir"], trace.to_str().unwrap());
}
