//! The `header` file: what was recorded, on what, and how it ended.
//!
//! Layout: magic `KRRTRACE`, format version (u32 LE), body length (u32 LE), the body as JSON,
//! CRC32 (u32 LE) of everything before it. The version sits outside the JSON so an incompatible
//! future body is refused with a message naming both versions, never misparsed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TraceError;
use crate::event::EndReason;
use crate::limits::MAX_HEADER_BODY;

/// Magic bytes at the start of the `header` file.
pub const HEADER_MAGIC: &[u8; 8] = b"KRRTRACE";
/// The trace format version this crate writes and reads. Bumped on any change an older reader
/// would misread (docs/trace-format.md).
pub const FORMAT_VERSION: u32 = 1;

/// The virtual machine a trace was recorded on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmConfig {
    /// CPU backend that ran the guest: `kvm` or `emu`.
    pub accel: String,
    pub vcpus: u32,
    pub mem_bytes: u64,
    /// The guest kernel command line.
    pub cmdline: String,
    /// CPUID vendor string of the CPU whose implementation-specific behaviour the recorded
    /// kernel saw: the host CPU for `kvm` (the silicon ran it, whatever CPUID the guest was
    /// shown), krr-emu's profile for `emu`. Replay runs krr-emu in that vendor's profile.
    /// Traces from before the field replay as `AuthenticAMD`, the only profile krr-emu had.
    #[serde(default = "legacy_cpu_vendor")]
    pub cpu_vendor: String,
}

fn legacy_cpu_vendor() -> String {
    "AuthenticAMD".into()
}

/// The guest kernel a trace belongs to; replay refuses another kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelInfo {
    /// GNU build-id of vmlinux, hex.
    pub build_id: String,
    /// `sha256:<hex>` of the vmlinux file.
    pub content_hash: String,
    /// Kernel release and source package version, e.g. `6.1.192 (linux-source-6.1 6.1.192-2)`.
    pub version: String,
}

/// One CPUID result the VMM presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub leaf: u32,
    pub subleaf: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The CPUID table of one vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuidTable {
    pub vcpu: u32,
    pub entries: Vec<CpuidEntry>,
}

/// Where the start snapshot is and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// File name inside the trace directory.
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// Written last, when the recording ended cleanly (poweroff, panic, interrupt or stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub end_reason: EndReason,
    pub end_time_unix_ms: u64,
    pub events: u64,
    pub blocks: u64,
    /// Size of the `events` file.
    pub event_bytes: u64,
    /// Size of the `console` file.
    pub console_bytes: u64,
}

/// The trace header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    /// The program that wrote the trace, e.g. `krr 0.1.0`.
    pub producer: String,
    pub vm: VmConfig,
    pub kernel: KernelInfo,
    pub cpuid: Vec<CpuidTable>,
    pub snapshot: Option<SnapshotRef>,
    pub start_time_unix_ms: u64,
    /// `None` while recording, or when the recorder was killed.
    pub completion: Option<Completion>,
}

impl Header {
    /// The bytes of the `header` file.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structs cannot fail.
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 20);
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parse the bytes of a `header` file; `path` names it in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, TraceError> {
        let corrupt = |reason: String| TraceError::CorruptHeader { path: path.to_owned(), reason };
        if bytes.len() < 8 || &bytes[..8] != HEADER_MAGIC {
            return Err(TraceError::BadMagic {
                path: path.to_owned(),
                found: bytes[..bytes.len().min(8)].to_vec(),
                expected: "KRRTRACE",
            });
        }
        if bytes.len() < 16 {
            return Err(corrupt(format!("{} bytes, shorter than the fixed part", bytes.len())));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let body_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        if body_len > MAX_HEADER_BODY {
            return Err(corrupt(format!("body length {body_len} above the limit {MAX_HEADER_BODY}")));
        }
        let want = 16 + body_len + 4;
        if bytes.len() != want {
            return Err(corrupt(format!("file is {} bytes, the header says {want}", bytes.len())));
        }
        let crc = u32::from_le_bytes([bytes[want - 4], bytes[want - 3], bytes[want - 2], bytes[want - 1]]);
        if crc32fast::hash(&bytes[..want - 4]) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        serde_json::from_slice(&bytes[16..16 + body_len]).map_err(|e| corrupt(format!("bad body: {e}")))
    }

    /// Read and parse `path`.
    pub fn read(path: &Path) -> Result<Self, TraceError> {
        let meta = std::fs::metadata(path).map_err(|e| TraceError::io(path, e))?;
        if meta.len() > (MAX_HEADER_BODY + 20) as u64 {
            return Err(TraceError::CorruptHeader {
                path: path.to_owned(),
                reason: format!("{} bytes, above the limit", meta.len()),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| TraceError::io(path, e))?;
        Self::decode(&bytes, path)
    }

    /// Write to `path` atomically: a temporary file, fsync, rename, fsync of the directory. A
    /// crash leaves either the old or the new header, never a torn one.
    pub fn write_atomic(&self, path: &Path) -> Result<(), TraceError> {
        use std::io::Write;
        let tmp = path.with_extension("new");
        let mut f = std::fs::File::create(&tmp).map_err(|e| TraceError::io(&tmp, e))?;
        f.write_all(&self.encode()).map_err(|e| TraceError::io(&tmp, e))?;
        f.sync_all().map_err(|e| TraceError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TraceError::io(path, e))?;
        if let Some(dir) = path.parent() {
            // Make the rename durable; not all filesystems allow fsync on a directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_from_before_cpu_vendor_reads_as_amd() {
        let vm: VmConfig =
            serde_json::from_str(r#"{"accel":"kvm","vcpus":1,"mem_bytes":4096,"cmdline":"x"}"#).unwrap();
        assert_eq!(vm.cpu_vendor, "AuthenticAMD");
    }

    fn sample() -> Header {
        Header {
            producer: "krr test".into(),
            vm: VmConfig {
                accel: "emu".into(),
                vcpus: 2,
                mem_bytes: 256 << 20,
                cmdline: "console=ttyS0".into(),
                cpu_vendor: "GenuineIntel".into(),
            },
            kernel: KernelInfo {
                build_id: "abcd".into(),
                content_hash: "sha256:00".into(),
                version: "6.1".into(),
            },
            cpuid: vec![CpuidTable {
                vcpu: 0,
                entries: vec![CpuidEntry { leaf: 1, eax: 0x806c1, ..Default::default() }],
            }],
            snapshot: None,
            start_time_unix_ms: 1,
            completion: None,
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode(), Path::new("h")).unwrap(), h);
    }

    #[test]
    fn errors_name_what_was_found() {
        let p = Path::new("t/header");
        let mut b = sample().encode();
        b[8] = 9;
        let e = Header::decode(&b, p).unwrap_err().to_string();
        assert!(e.contains("version 9") && e.contains("version 1"), "{e}");
        let e = Header::decode(b"NOTATRACE.......", p).unwrap_err();
        assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
        let mut b = sample().encode();
        let n = b.len();
        b[n / 2] ^= 1;
        let e = Header::decode(&b, p).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let b = sample().encode();
        let e = Header::decode(&b[..b.len() - 1], p).unwrap_err().to_string();
        assert!(e.contains("bytes"), "{e}");
        assert!(Header::decode(&[], p).is_err());
    }
}
