//! Embeds the guest sources (guest/: build script, kconfig fragments, agent patches, /init and the
//! workloads) into the `krr` binary, so that an installed krr builds its guest without the source
//! tree it was compiled from (`krr guest build` unpacks them into the cache).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.is_file() {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guest =
        manifest.join("../../guest").canonicalize().expect("the guest/ directory of the krr source tree");
    println!("cargo:rerun-if-changed={}", guest.display());
    let mut files = Vec::new();
    collect(&guest, &guest, &mut files);
    let mut code = String::from("/// The guest sources: (path relative to guest/, contents, executable).\n");
    code.push_str("pub const GUEST_FILES: &[(&str, &[u8], bool)] = &[\n");
    for rel in &files {
        let abs = guest.join(rel);
        let exec = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&abs).unwrap().permissions().mode() & 0o111 != 0
        };
        writeln!(
            code,
            "    ({:?}, include_bytes!({:?}), {exec}),",
            rel.to_str().unwrap(),
            abs.to_str().unwrap()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("guest_files.rs");
    std::fs::write(out, code).unwrap();
}
