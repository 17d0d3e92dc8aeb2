//! Blocks of the `events` file, shared by the writer and the reader.
//!
//! The file starts with magic `KRREVENT`, the format version (u32 LE) and four reserved zero
//! bytes. Blocks follow back to back, each a 32-byte header and its stored payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `KBLK` |
//! | 4 | 1 | codec: 0 none, 1 lz4, 2 zstd |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | number of events (u32 LE) |
//! | 12 | 8 | index of the first event (u64 LE) |
//! | 20 | 4 | raw (uncompressed) length (u32 LE) |
//! | 24 | 4 | stored length (u32 LE) |
//! | 28 | 4 | CRC32 of the stored payload (u32 LE) |
//!
//! followed by a CRC32 of those 32 bytes (u32 LE), so a 36-byte header in all.

use crate::limits::{MAX_BLOCK_RAW, MAX_BLOCK_STORED};

pub const EVENTS_MAGIC: &[u8; 8] = b"KRREVENT";
pub const EVENTS_FILE_HEADER_LEN: u64 = 16;
pub const BLOCK_MAGIC: &[u8; 4] = b"KBLK";
pub const BLOCK_HEADER_LEN: usize = 36;

/// How a block's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Lz4 = 1,
    Zstd = 2,
}

impl Codec {
    pub fn from_id(id: u8) -> Option<Codec> {
        match id {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// A block's header, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub codec: Codec,
    pub events: u32,
    pub first_event: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub payload_crc: u32,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        b[0..4].copy_from_slice(BLOCK_MAGIC);
        b[4] = self.codec as u8;
        b[8..12].copy_from_slice(&self.events.to_le_bytes());
        b[12..20].copy_from_slice(&self.first_event.to_le_bytes());
        b[20..24].copy_from_slice(&self.raw_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.stored_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse and validate a block header; the error says what is wrong with it.
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> Result<Self, String> {
        if &b[0..4] != BLOCK_MAGIC {
            return Err(format!("bad block magic {:02x?}", &b[0..4]));
        }
        let crc = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
        if crc32fast::hash(&b[..32]) != crc {
            return Err("block header checksum mismatch".into());
        }
        let codec = Codec::from_id(b[4]).ok_or_else(|| format!("unknown codec {}", b[4]))?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&b[12..20]);
        let h = BlockHeader {
            codec,
            events: u32_at(8),
            first_event: u64::from_le_bytes(first),
            raw_len: u32_at(20),
            stored_len: u32_at(24),
            payload_crc: u32_at(28),
        };
        if h.raw_len as usize > MAX_BLOCK_RAW {
            return Err(format!("raw length {} above the limit {MAX_BLOCK_RAW}", h.raw_len));
        }
        if h.stored_len as usize > MAX_BLOCK_STORED {
            return Err(format!("stored length {} above the limit {MAX_BLOCK_STORED}", h.stored_len));
        }
        // Every event takes at least one byte.
        if h.events == 0 || h.events > h.raw_len {
            return Err(format!("{} events cannot fit in {} bytes", h.events, h.raw_len));
        }
        if codec == Codec::None && h.raw_len != h.stored_len {
            return Err("uncompressed block with differing lengths".into());
        }
        Ok(h)
    }
}

/// Compress `raw` with `codec`; falls back to storing it uncompressed when that is smaller.
pub fn compress(
    codec: Codec,
    raw: &[u8],
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
) -> (Codec, Vec<u8>) {
    let stored = match codec {
        Codec::None => None,
        Codec::Lz4 => Some(lz4_flex::block::compress(raw)),
        Codec::Zstd => {
            if zstd.is_none() {
                *zstd = zstd::bulk::Compressor::new(1).ok();
            }
            zstd.as_mut().and_then(|c| c.compress(raw).ok())
        }
    };
    match stored {
        Some(s) if s.len() < raw.len() => (codec, s),
        _ => (Codec::None, raw.to_vec()),
    }
}

/// Decompress a stored payload to exactly `raw_len` bytes.
pub fn decompress(codec: Codec, stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let raw = match codec {
        Codec::None => stored.to_vec(),
        Codec::Lz4 => lz4_flex::block::decompress(stored, raw_len).map_err(|e| format!("lz4: {e}"))?,
        Codec::Zstd => {
            // The capacity bounds the output, so a hostile frame cannot allocate more.
            zstd::bulk::decompress(stored, raw_len).map_err(|e| format!("zstd: {e}"))?
        }
    };
    if raw.len() != raw_len {
        return Err(format!("decompressed to {} bytes, the header says {raw_len}", raw.len()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_checks() {
        let h = BlockHeader {
            codec: Codec::Zstd,
            events: 3,
            first_event: 7,
            raw_len: 10,
            stored_len: 9,
            payload_crc: 5,
        };
        let b = h.encode();
        assert_eq!(BlockHeader::decode(&b).unwrap(), h);
        for i in 0..BLOCK_HEADER_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(BlockHeader::decode(&c).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn codecs_roundtrip() {
        let raw: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let mut z = None;
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let (used, stored) = compress(codec, &raw, &mut z);
            assert_eq!(used, codec);
            assert_eq!(decompress(used, &stored, raw.len()).unwrap(), raw);
            assert!(decompress(used, &stored, raw.len() - 1).is_err());
        }
        // Incompressible data is stored as is.
        let noise: Vec<u8> = (0..64u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert_eq!(compress(Codec::Lz4, &noise, &mut z).0, Codec::None);
    }
}
