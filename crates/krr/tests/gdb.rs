//! `krr replay --gdb` end to end: a trace recorded on the `emu` backend, served to the real gdb
//! in batch mode. Breakpoints and backtraces, stepi and reverse-stepi over the same PCs,
//! reverse-continue to the previous hit, a watchpoint found backwards with its old and new
//! values, the kernel's own gdb scripts, `krr gdbinit`'s commands, and determinism. These
//! tests fail, not skip, when the guest or gdb is missing.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::guest_dir;

fn krr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_krr"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One recording of /bin/forkexec for all the tests here.
fn trace() -> PathBuf {
    static TRACE: OnceLock<tempfile::TempDir> = OnceLock::new();
    recorded(&TRACE, "forkexec", 0)
}

/// One recording of /bin/panic (the kernel panics; `krr record` exits 125).
fn panic_trace() -> PathBuf {
    static TRACE: OnceLock<tempfile::TempDir> = OnceLock::new();
    recorded(&TRACE, "panic", 125)
}

fn recorded(cell: &'static OnceLock<tempfile::TempDir>, workload: &str, status: i32) -> PathBuf {
    cell.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = common::record_emu(&tmp.path().join("t"), workload);
        assert_eq!(out.status.code(), Some(status), "record: {}", text(&out.stderr));
        tmp
    })
    .path()
    .join("t")
}

/// Serve the forkexec trace on a Unix socket, run `script` in `gdb -batch` against it; gdb's
/// stdout.
fn gdb(script: &str) -> String {
    gdb_on(&trace(), script)
}

fn gdb_on(trace: &std::path::Path, script: &str) -> String {
    gdb_with(trace, script, &["set auto-load no"])
}

/// gdb on a replay of `trace` with `-iex` commands `iex`, running `script`.
fn gdb_with(trace: &std::path::Path, script: &str, iex: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("gdb.sock");
    let vmlinux = guest_dir().join("vmlinux");
    let server = krr()
        .arg("replay")
        .arg(trace)
        .arg("--vmlinux")
        .arg(&vmlinux)
        .arg("--gdb")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = tmp.path().join("script.gdb");
    let full = format!(
        "set pagination off\nset confirm off\nset width 0\ntarget remote {}\n{script}\n",
        sock.display()
    );
    std::fs::write(&file, full).unwrap();
    // gdb prints `monitor` output on stderr: one file for both keeps the order.
    let log = tmp.path().join("gdb.out");
    let f = std::fs::File::create(&log).unwrap();
    let status = Command::new("gdb")
        // A `monitor goto` far into a trace can take longer than gdb's default 2 s wait for a
        // reply on a loaded machine.
        .args(["-batch", "-nx", "-iex", "set remotetimeout 30"])
        .args(iex.iter().flat_map(|c| ["-iex", c]))
        .arg("-x")
        .arg(&file)
        .arg(&vmlinux)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .expect("run gdb");
    let srv = server.wait_with_output().unwrap();
    let stdout = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "gdb: {stdout}");
    assert_eq!(srv.status.code(), Some(0), "server: {}", text(&srv.stderr));
    assert!(
        text(&srv.stderr).contains(&format!(
            "gdb -iex 'add-auto-load-safe-path {}' '{}' -ex 'target remote {}'",
            guest_dir().display(),
            vmlinux.display(),
            sock.display()
        )),
        "the server prints the command to paste: {}",
        text(&srv.stderr)
    );
    stdout
}

/// The `monitor when` lines, in order.
fn whens(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.starts_with("event ")).map(str::to_owned).collect()
}

/// Values of lines `TAG value`, in order.
fn tagged(out: &str, tag: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.strip_prefix(tag)).map(|v| v.trim().to_owned()).collect()
}

fn symbol(name: &str) -> u64 {
    let map = std::fs::read_to_string(guest_dir().join("System.map")).unwrap();
    let line = map.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap();
    u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
}

#[test]
fn breakpoint_in_a_syscall_handler_with_its_call_chain() {
    let out = gdb("break __x64_sys_getpid\ncontinue\nbt\ninfo registers rip\nmonitor when");
    assert!(out.contains("Breakpoint 1, "), "{out}");
    let bt: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(bt.iter().any(|l| l.contains("do_syscall_64")), "{out}");
    assert!(bt.iter().any(|l| l.contains("entry_SYSCALL_64")), "{out}");
    let rip = out.lines().find(|l| l.starts_with("rip ")).unwrap();
    let want = format!("{:#x}", symbol("__x64_sys_getpid"));
    assert_eq!(rip.split_whitespace().nth(1), Some(want.as_str()), "{out}");
    assert!(whens(&out)[0].ends_with(&format!("rip {want}")), "{out}");
}

#[test]
fn reverse_stepi_retraces_stepi() {
    let script = r#"break __x64_sys_getpid
continue
printf "P %lx\n", $pc
set $i = 0
while $i < 20
  stepi
  printf "F %lx\n", $pc
  set $i = $i + 1
end
set $i = 0
while $i < 20
  reverse-stepi
  printf "R %lx\n", $pc
  set $i = $i + 1
end
set $i = 0
while $i < 20
  stepi
  printf "G %lx\n", $pc
  set $i = $i + 1
end
"#;
    let out = gdb(script);
    let (p, f, r, g) = (tagged(&out, "P "), tagged(&out, "F "), tagged(&out, "R "), tagged(&out, "G "));
    assert_eq!((p.len(), f.len(), r.len(), g.len()), (1, 20, 20, 20), "{out}");
    // Backwards: the PCs before each forward step, latest first.
    let mut before: Vec<String> = p.iter().chain(&f[..19]).cloned().collect();
    before.reverse();
    assert_eq!(r, before, "{out}");
    assert_eq!(g, f, "{out}");
    assert!(f.iter().collect::<std::collections::BTreeSet<_>>().len() > 5, "the steps moved: {f:?}");
}

const THREE_HITS: &str = "break kernel_clone
continue
monitor when
continue
monitor when
continue
monitor when
reverse-continue
monitor when
reverse-continue
monitor when
reverse-continue
monitor when
";

#[test]
fn reverse_continue_stops_at_the_previous_hit() {
    let out = gdb(THREE_HITS);
    let w = whens(&out);
    assert_eq!(w.len(), 6, "{out}");
    assert!(w[0] != w[1] && w[1] != w[2], "three different hits: {w:?}");
    assert_eq!(w[3], w[1], "back from the third hit to the second: {out}");
    assert_eq!(w[4], w[0], "then to the first: {out}");
    assert!(out.contains("No more reverse-execution history."), "{out}");
    assert!(w[5].contains(", step 0, "), "no hit before the first: back at the start: {out}");
    assert!(out.matches("Breakpoint 1, kernel_clone").count() >= 5, "{out}");
}

#[test]
fn watchpoint_found_backwards_with_old_and_new_values() {
    let script = "break kernel_clone
continue
continue
printf \"V %d\\n\", total_forks
delete
watch -l total_forks
reverse-continue
printf \"B %d\\n\", total_forks
monitor when
continue
printf \"A %d\\n\", total_forks
monitor when
";
    let out = gdb(script);
    let v: i64 = tagged(&out, "V ")[0].parse().unwrap();
    assert!(out.contains("Hardware watchpoint 2: -location total_forks"), "{out}");
    let olds = tagged(&out, "Old value = ");
    let news = tagged(&out, "New value = ");
    // Backwards: stopped before the last write (total_forks++ in copy_process), so gdb sees the
    // value go from V back to V-1; forwards again, from V-1 to V just after the write.
    assert_eq!(olds, [v.to_string(), (v - 1).to_string()], "{out}");
    assert_eq!(news, [(v - 1).to_string(), v.to_string()], "{out}");
    assert_eq!(tagged(&out, "B "), [(v - 1).to_string()], "{out}");
    assert_eq!(tagged(&out, "A "), [v.to_string()], "{out}");
    assert!(out.contains("in copy_process"), "{out}");
    let w = whens(&out);
    let step =
        |s: &str| -> u64 { s.split(", step ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap() };
    assert_eq!(step(&w[1]), step(&w[0]) + 1, "one instruction, the write: {w:?}");
}

#[test]
fn kernel_gdb_scripts_load_with_the_printed_connect_line() {
    // The server prints `gdb -iex 'add-auto-load-safe-path GUEST' ...` (checked in gdb_with):
    // with that alone, gdb loads vmlinux-gdb.py and the lx-* commands exist.
    let safe = format!("add-auto-load-safe-path {}", guest_dir().display());
    let script = "break __x64_sys_getpid\ncontinue\nlx-dmesg\nlx-ps\np $lx_current().comm\n";
    let out = gdb_with(&trace(), script, &[&safe]);
    assert!(out.contains("Run /init as init process"), "lx-dmesg: {out}");
    let ps: Vec<&str> = out.lines().filter(|l| l.starts_with("0xffff")).collect();
    assert!(ps.iter().any(|l| l.ends_with(" init")), "lx-ps: {out}");
    assert!(ps.iter().any(|l| l.ends_with(" forkexec")), "lx-ps: {out}");
    assert!(out.lines().any(|l| l.starts_with("$1 = \"")), "per-CPU current task through gs_base: {out}");
}

#[test]
fn gdbinit_when_checkpoint_restart() {
    let out = krr().arg("gdbinit").output().unwrap();
    assert!(out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let init: PathBuf = tmp.path().join("krr.gdb");
    std::fs::write(&init, &out.stdout).unwrap();
    let script = format!(
        "source {}\nbreak kernel_clone\ncontinue\nwhen\ncheckpoint\ncontinue\nwhen\nrestart 1\nwhen\nkrr-goto 1000\nkrr-info\n",
        init.display()
    );
    let out = gdb(&script);
    let w = whens(&out);
    assert_eq!(w.len(), 6, "{out}");
    assert!(out.contains("checkpoint 1 at step"), "{out}");
    assert_ne!(w[0], w[1]);
    assert_eq!(w[2], w[0], "restart 1 is the machine at the checkpoint: {out}");
    assert_eq!(w[2], w[3], "restart prints where it is");
    assert!(w[4].starts_with("event 1000 of "), "{out}");
    assert!(out.contains("checkpoints: "), "{out}");
}

#[test]
fn the_same_script_gives_the_same_answers() {
    let a = gdb(THREE_HITS);
    let b = gdb(THREE_HITS);
    assert_eq!(a, b);
}

#[test]
fn the_end_of_the_trace_is_the_end_of_history() {
    let out = gdb("continue\nmonitor when\nstepi\nmonitor when\nreverse-stepi\nmonitor when\n");
    let w = whens(&out);
    assert_eq!(w.len(), 3, "{out}");
    let n = w[0].split(" of ").nth(1).unwrap().split(',').next().unwrap();
    assert!(w[0].starts_with(&format!("event {n} of {n},")), "continue replays the whole trace: {out}");
    assert_eq!(out.matches("No more reverse-execution history.").count(), 2, "{out}");
    assert_eq!(w[1], w[0], "stepi at the end stays there: {out}");
    assert_ne!(w[2], w[1], "reverse-stepi from the end goes back: {out}");
}

/// docs/gdb.md's walk through a recorded panic: stop in `panic`, see who called it, run to the
/// end of the recording (the agent's panic hook), come back to the breakpoint and step back into
/// the caller.
#[test]
fn a_recorded_panic_walked_backwards() {
    let out = gdb_on(
        &panic_trace(),
        "break panic\ncontinue\nbt 3\nmonitor when\ncontinue\nmonitor when\nreverse-continue\nmonitor when\nreverse-stepi\ninfo symbol $pc",
    );
    assert!(out.contains("Breakpoint 1, panic ("), "{out}");
    assert!(out.lines().any(|l| l.starts_with("#1") && l.contains("sysrq_handle_crash")), "{out}");
    let w = whens(&out);
    assert_eq!(w.len(), 3, "{out}");
    // Forward from the breakpoint: the end of the trace, in the agent's panic hook.
    assert!(out.contains("No more reverse-execution history."), "{out}");
    let total = w[1].split(" of ").nth(1).unwrap().split(',').next().unwrap();
    assert!(w[1].starts_with(&format!("event {total} of {total},")), "at the last event: {out}");
    assert!(out.contains("krr_outl"), "stopped at the agent's panic write: {out}");
    // Back to the same breakpoint hit, exactly.
    assert_eq!(w[2], w[0], "{out}");
    assert!(out.contains("sysrq_handle_crash + "), "one instruction back is the call in the caller: {out}");
}

/// One recording of /bin/smp-munmap on two vCPUs (TLB shootdowns: `flush_tlb_func` runs on
/// both).
fn smp_trace() -> PathBuf {
    static TRACE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TRACE
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let out = common::record_emu_with(&tmp.path().join("t"), &["--smp", "2"], &["/bin/smp-munmap"]);
            assert_eq!(out.status.code(), Some(0), "record: {}", text(&out.stderr));
            tmp
        })
        .path()
        .join("t")
}

/// The debugger follows the replay from vCPU to vCPU: a breakpoint in the TLB flush is hit on
/// both (the sender flushes its own TLB, the IPI's receiver its own), `monitor when` names the
/// vCPU, and reverse-continue goes back to the previous hit on whichever vCPU it was.
#[test]
fn breakpoints_follow_the_replay_across_vcpus() {
    // From the middle of the workload (its first flushes are process setup on one vCPU).
    let events = krr_trace::TraceReader::open(&smp_trace()).unwrap().events().count();
    let mut script = format!("monitor goto {}\nbreak flush_tlb_func\n", events / 2);
    for _ in 0..8 {
        script.push_str("continue\nmonitor when\n");
    }
    script.push_str("reverse-continue\nmonitor when\n");
    let out = gdb_on(&smp_trace(), &script);
    let w = whens(&out);
    // The first line is `monitor goto`'s.
    assert_eq!(w.len(), 10, "{out}");
    let w = &w[1..];
    let rip = format!("rip {:#x}", symbol("flush_tlb_func"));
    assert!(w.iter().all(|l| l.ends_with(&rip)), "every stop at the breakpoint: {w:?}");
    let vcpus: std::collections::BTreeSet<&str> =
        w[..8].iter().filter_map(|l| l.split(", ").find(|p| p.starts_with("vCPU "))).collect();
    assert_eq!(vcpus.len(), 2, "hits on both vCPUs: {w:?}");
    assert_eq!(w[8], w[6], "reverse-continue returns to the previous hit: {w:?}");
}
