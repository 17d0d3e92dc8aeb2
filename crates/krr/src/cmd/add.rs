//! `--add HOST[:GUEST]` and `--add-bin PROG` of `run` and `record`: host files, directories and
//! dynamically linked programs (with their shared libraries) put into the guest, in a cpio
//! archive appended to the initramfs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use krr_vmm::boot::cpio::{self, Entry, S_IFDIR, S_IFLNK, S_IFREG};

/// Where `--add HOST[:GUEST]` puts HOST: GUEST, or `/` and HOST's last component.
fn parse_add(spec: &str) -> anyhow::Result<(PathBuf, String)> {
    let (host, guest) = match spec.split_once(':') {
        Some((h, g)) => (h, Some(g)),
        None => (spec, None),
    };
    let host = PathBuf::from(host);
    let guest = match guest {
        Some(g) if g.starts_with('/') => g.trim_end_matches('/').to_string(),
        Some(g) => bail!("--add {spec}: the guest path {g:?} must be absolute"),
        None => {
            let name = std::fs::canonicalize(&host)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .with_context(|| format!("--add {spec}: {} does not exist", host.display()))?;
            format!("/{name}")
        }
    };
    if guest.is_empty() {
        bail!("--add {spec}: cannot replace the guest's root directory");
    }
    Ok((host, guest))
}

/// `host` (a file, symlink or directory, recursively) as entries under `guest`.
fn walk(host: &Path, guest: &str, out: &mut Vec<Entry>) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(host).with_context(|| format!("--add: {}", host.display()))?;
    let perm = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(host).with_context(|| format!("--add: {}", host.display()))?;
        out.push(Entry {
            path: guest.into(),
            mode: S_IFLNK | 0o777,
            data: target.into_os_string().into_encoded_bytes(),
        });
    } else if meta.is_dir() {
        out.push(Entry { path: guest.into(), mode: S_IFDIR | perm, data: Vec::new() });
        let mut children: Vec<_> = std::fs::read_dir(host)
            .with_context(|| format!("--add: {}", host.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("--add: {}", host.display()))?;
        children.sort_by_key(|c| c.file_name());
        for c in children {
            let name = c.file_name().to_string_lossy().into_owned();
            walk(&c.path(), &format!("{guest}/{name}"), out)?;
        }
    } else if meta.is_file() {
        let data = std::fs::read(host).with_context(|| format!("--add: {}", host.display()))?;
        out.push(Entry { path: guest.into(), mode: S_IFREG | perm, data });
    } else {
        bail!("--add: {} is not a file, directory or symlink", host.display());
    }
    Ok(())
}

/// PROG as given, or found in PATH when it has no slash.
fn find_program(prog: &str) -> anyhow::Result<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        if !p.is_file() {
            bail!("--add-bin {prog}: no such file");
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .with_context(|| format!("--add-bin {prog}: not found in PATH"))
}

/// The shared objects `prog` loads and its ELF interpreter, as `ldd` lists them (absolute host
/// paths, which are also where the guest's loader looks for them). Empty for a static program.
fn shared_objects(prog: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(prog)
        .output()
        .with_context(|| format!("--add-bin {}: cannot run ldd", prog.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("--add-bin {}: ldd failed: {}", prog.display(), text.trim());
    }
    parse_ldd(&text).map_err(|missing| {
        anyhow::anyhow!("--add-bin {}: needs {missing}, which ldd does not find on this host", prog.display())
    })
}

/// Library paths from ldd's output; `Err(name)` for a library it does not find.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_string());
                }
                rest.split_whitespace().next().filter(|p| p.starts_with('/'))
            }
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The archive to append to `initrd` for `adds` and `bins`, and a one-line summary; `None` when
/// nothing is added.
pub fn archive(
    initrd: Option<&Path>,
    adds: &[String],
    bins: &[String],
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    if adds.is_empty() && bins.is_empty() {
        return Ok(None);
    }
    let mut entries = Vec::new();
    for spec in adds {
        let (host, guest) = parse_add(spec)?;
        walk(&host, &guest, &mut entries)?;
    }
    // Two programs may share libraries: count each once, as the archive holds it once.
    let mut libs = std::collections::BTreeSet::new();
    for prog in bins {
        let path = find_program(prog)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let data = std::fs::read(&path).with_context(|| format!("--add-bin {}", path.display()))?;
        let perm = std::fs::metadata(&path)?.permissions().mode() & 0o7777;
        entries.push(Entry { path: format!("/usr/bin/{name}"), mode: S_IFREG | perm | 0o111, data });
        for lib in shared_objects(&path)? {
            // The file itself, under the name the loader asks for (symlinks followed).
            let data = std::fs::read(&lib).with_context(|| format!("--add-bin {prog}: {}", lib.display()))?;
            entries.push(Entry { path: lib.to_string_lossy().into_owned(), mode: S_IFREG | 0o755, data });
            libs.insert(lib.clone());
        }
    }
    // A later entry for the same path wins, as it would in the guest; keep the first place.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut unique: Vec<Entry> = Vec::new();
    for e in entries {
        match seen.get(&e.path) {
            Some(&i) => unique[i] = e,
            None => {
                seen.insert(e.path.clone(), unique.len());
                unique.push(e);
            }
        }
    }
    let existing = match initrd {
        Some(p) => cpio::list(&std::fs::read(p).with_context(|| format!("{}", p.display()))?),
        None => BTreeMap::new(),
    };
    let bytes: usize = unique.iter().map(|e| e.data.len()).sum();
    let archive = cpio::write(&unique, &existing);
    let summary = format!(
        "{} files and directories ({} shared objects), {:.1} MiB added to the initramfs",
        unique.len(),
        libs.len(),
        bytes as f64 / (1 << 20) as f64
    );
    Ok(Some((archive, summary)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
        assert_eq!(parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err(), "libfoo.so.1");
    }

    #[test]
    fn add_specs_name_their_guest_path() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("repro");
        std::fs::write(&f, b"x").unwrap();
        let spec = f.to_string_lossy().into_owned();
        assert_eq!(parse_add(&spec).unwrap(), (f.clone(), "/repro".to_string()));
        assert_eq!(parse_add(&format!("{spec}:/root/r/")).unwrap(), (f.clone(), "/root/r".to_string()));
        assert!(parse_add(&format!("{spec}:root")).is_err());
        assert!(parse_add(&format!("{spec}:/")).is_err());
        assert!(parse_add("/no/such/file").unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn a_directory_goes_in_whole_with_modes_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("data");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(d.join("sub/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/run.sh", d.join("link")).unwrap();
        let (a, summary) = archive(None, &[format!("{}:/opt/data", d.display())], &[]).unwrap().unwrap();
        let got = cpio::list(&a);
        assert_eq!(got["opt/data"], S_IFDIR | 0o755);
        assert_eq!(got["opt/data/sub/run.sh"], S_IFREG | 0o755);
        assert_eq!(got["opt/data/link"], S_IFLNK | 0o777);
        assert!(got.contains_key("opt"));
        assert!(summary.starts_with("4 files and directories"), "{summary}");
    }
}
