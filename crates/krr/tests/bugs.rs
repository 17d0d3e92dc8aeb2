//! The bug corpus (`bugs/NAME/`, docs/bugs.md) is well formed: every bug has its revert, its
//! trigger, its gdb check and a `bug.conf` with what `scripts/bugs.sh` needs, and every trigger
//! compiles as the script compiles it. Recording the bugs needs their KASAN kernels and runs
//! outside CI (`scripts/bugs.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bugs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bugs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The value of `KEY=...` in a shell-sourced bug.conf (quotes removed).
fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().trim_matches('"').to_string())
}

#[test]
fn every_bug_has_a_revert_a_trigger_a_gdb_check_and_a_conf() {
    let all = bugs();
    assert!(all.len() >= 10, "the corpus has {} bugs", all.len());
    let mut races = 0;
    for bug in all {
        let name = bug.file_name().unwrap().to_string_lossy().into_owned();
        let conf =
            std::fs::read_to_string(bug.join("bug.conf")).unwrap_or_else(|e| panic!("{name}: bug.conf: {e}"));
        for key in ["KIND", "ORIGIN", "TITLE", "SMP", "TRIES", "GDB_EXPECT"] {
            let v = conf_value(&conf, key).unwrap_or_else(|| panic!("{name}: bug.conf lacks {key}"));
            assert!(!v.is_empty(), "{name}: {key} is empty");
        }
        // A KASAN report ("KASAN: use-after-free in f") or a WARNING's location ("file.c:600 f").
        let title = conf_value(&conf, "TITLE").unwrap();
        let kasan = title.starts_with("KASAN: ") && title.contains(" in ");
        let warning = title
            .split_once(' ')
            .and_then(|(at, _)| at.split_once(".c:"))
            .is_some_and(|(_, line)| line.parse::<u32>().is_ok());
        assert!(kasan || warning, "{name}: report title {title:?}");
        if conf_value(&conf, "KIND").as_deref() == Some("race") {
            races += 1;
            let smp: u32 = conf_value(&conf, "SMP").unwrap().parse().unwrap();
            let tries: u32 = conf_value(&conf, "TRIES").unwrap().parse().unwrap();
            assert!(smp >= 2 && tries > 1, "{name}: a race is recorded at --smp 2 or more, with retries");
        }
        let revert = std::fs::read_to_string(bug.join("revert.patch")).unwrap();
        assert!(
            revert.lines().any(|l| l.starts_with("--- a/"))
                && revert.lines().any(|l| l.starts_with("+++ b/")),
            "{name}: revert.patch is not a -p1 unified diff"
        );
        let gdb = std::fs::read_to_string(bug.join("gdb.cmd")).unwrap();
        assert!(gdb.contains("reverse-"), "{name}: the gdb check never goes backwards");
    }
    assert!(races >= 3, "the corpus has {races} races");
}

#[test]
fn every_trigger_compiles_static() {
    let tmp = tempfile::tempdir().unwrap();
    for bug in bugs() {
        let name = bug.file_name().unwrap().to_string_lossy().into_owned();
        let conf = std::fs::read_to_string(bug.join("bug.conf")).unwrap();
        let out = tmp.path().join(&name);
        let mut cc = Command::new("gcc");
        cc.args(["-static", "-O2", "-Wall", "-Werror", "-o"]).arg(&out).arg(bug.join("trigger.c"));
        if let Some(flags) = conf_value(&conf, "CFLAGS") {
            cc.args(flags.split_whitespace());
        }
        let r = cc.output().unwrap();
        assert!(r.status.success(), "{name}: {}", String::from_utf8_lossy(&r.stderr));
        assert!(out.exists());
    }
}
