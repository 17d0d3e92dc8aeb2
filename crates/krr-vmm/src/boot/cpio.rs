//! The initramfs's cpio "newc" format: a writer for the archive of files added to a guest
//! (`--add`), appended after the initramfs (Linux unpacks concatenated archives in order), and
//! a reader of the paths an archive already has, so that the added one does not turn an
//! existing symlink into a directory (Linux replaces an entry of another type).

use std::collections::BTreeMap;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
const S_IFMT: u32 = 0o170000;

/// One entry to write: its path in the guest (absolute), its mode (type and permissions) and
/// its contents (a symlink's target for a symlink, nothing for a directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// `path` without leading slashes and `./`, as archives name entries.
fn relative(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(r) = p.strip_prefix('/') {
            p = r;
        } else if let Some(r) = p.strip_prefix("./") {
            p = r;
        } else {
            return p;
        }
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn push_header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, name: &str) {
    out.extend_from_slice(MAGIC);
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Paths (relative, as archived) and modes of every entry in `archive`: one or several
/// concatenated newc archives. Reading stops quietly where the bytes are not newc (a
/// compressed initramfs): the caller then knows fewer paths, not wrong ones.
pub fn list(archive: &[u8]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    let hex = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| u32::from_str_radix(s, 16).ok());
    loop {
        while at < archive.len() && archive[at] == 0 {
            at += 1;
        }
        let Some(h) = archive.get(at..at + HEADER_LEN) else { break };
        if &h[..6] != MAGIC && &h[..6] != b"070702" {
            break;
        }
        let field = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
        let (Some(mode), Some(size), Some(namesize)) = (field(1), field(6), field(11)) else { break };
        let name_at = at + HEADER_LEN;
        let Some(name) = archive.get(name_at..name_at + (namesize as usize).saturating_sub(1)) else { break };
        let name = String::from_utf8_lossy(name).into_owned();
        let data_at = (name_at + namesize as usize).next_multiple_of(4);
        at = (data_at + size as usize).next_multiple_of(4);
        if name != TRAILER {
            out.insert(relative(&name).to_string(), mode);
        }
    }
    out
}

/// A newc archive of `entries`, in order, preceded by the directories on their paths that
/// `existing` (from [`list`] of the archive it follows) does not have.
pub fn write(entries: &[Entry], existing: &BTreeMap<String, u32>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut made: BTreeMap<String, u32> = BTreeMap::new();
    let mut ino = 0x4b52_0000u32;
    let mut next_ino = || {
        ino += 1;
        ino
    };
    for e in entries {
        let name = relative(&e.path);
        if name.is_empty() {
            continue;
        }
        let parts: Vec<&str> = name.split('/').collect();
        for n in 1..parts.len() {
            let dir = parts[..n].join("/");
            if existing.contains_key(&dir) || made.contains_key(&dir) {
                continue;
            }
            push_header(&mut out, next_ino(), S_IFDIR | 0o755, 2, 0, &dir);
            made.insert(dir, S_IFDIR);
        }
        if e.mode & S_IFMT == S_IFDIR && (existing.contains_key(name) || made.contains_key(name)) {
            continue;
        }
        let nlink = if e.mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        let data: &[u8] = if e.mode & S_IFMT == S_IFDIR { &[] } else { &e.data };
        push_header(&mut out, next_ino(), e.mode, nlink, data.len(), name);
        out.extend_from_slice(data);
        pad4(&mut out);
        made.insert(name.to_string(), e.mode);
    }
    push_header(&mut out, 0, 0, 1, 0, TRAILER);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry { path: path.into(), mode: S_IFREG | 0o755, data: data.to_vec() }
    }

    #[test]
    fn an_archive_lists_what_was_written_with_its_parent_directories() {
        let a = write(
            &[file("/usr/local/bin/prog", b"\x7fELF..."), file("/etc/x.conf", b"a=1\n")],
            &BTreeMap::new(),
        );
        assert_eq!(a.len() % 4, 0);
        let got = list(&a);
        let names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["etc", "etc/x.conf", "usr", "usr/local", "usr/local/bin", "usr/local/bin/prog"]);
        assert_eq!(got["usr/local/bin/prog"], S_IFREG | 0o755);
        assert_eq!(got["usr"], S_IFDIR | 0o755);
        // The file's bytes follow its header and name, 4-byte aligned.
        let at = a.windows(4).position(|w| w == b"a=1\n").unwrap();
        assert_eq!(at % 4, 0);
    }

    #[test]
    fn directories_the_initramfs_has_are_not_written_again() {
        // The guest's /usr/bin is a symlink: a directory entry would replace it.
        let base = write(
            &[
                Entry { path: "/bin".into(), mode: S_IFDIR | 0o755, data: vec![] },
                Entry { path: "/usr/bin".into(), mode: S_IFLNK | 0o777, data: b"../bin".to_vec() },
            ],
            &BTreeMap::new(),
        );
        let existing = list(&base);
        assert_eq!(existing["usr/bin"], S_IFLNK | 0o777);
        let added =
            write(&[file("/usr/bin/tool", b"x"), file("/lib/x86_64-linux-gnu/libc.so.6", b"y")], &existing);
        let names: Vec<String> = list(&added).into_keys().collect();
        assert_eq!(names, ["lib", "lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu/libc.so.6", "usr/bin/tool"]);
        // Concatenated archives are listed as one.
        let mut both = base.clone();
        both.extend_from_slice(&added);
        assert_eq!(list(&both).len(), existing.len() + 4);
    }

    #[test]
    fn reading_stops_quietly_at_bytes_that_are_not_an_archive() {
        let mut a = write(&[file("/a", b"1")], &BTreeMap::new());
        a.extend_from_slice(b"\x1f\x8b\x08compressed");
        assert_eq!(list(&a).into_keys().collect::<Vec<_>>(), ["a"]);
        assert!(list(b"070701zz").is_empty());
        assert!(list(&[]).is_empty());
        // A header whose sizes point past the end.
        let mut t = write(&[file("/b", &[7; 100])], &BTreeMap::new());
        t.truncate(120);
        assert_eq!(list(&t).len(), 1);
    }
}
