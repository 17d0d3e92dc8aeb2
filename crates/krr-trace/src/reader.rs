//! Trace reader: header, block index, streaming and random-access event iteration.
//!
//! Opening scans the block headers (not the payloads) to build the index. A damaged or truncated
//! tail ends the index at the last intact block and is remembered as [`Damage`]; iteration yields
//! every event before it and then one [`TraceError::Corrupt`] saying where the damage starts.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::block::{decompress, BlockHeader, BLOCK_HEADER_LEN, EVENTS_FILE_HEADER_LEN, EVENTS_MAGIC};
use crate::codec::Decoder;
use crate::error::TraceError;
use crate::event::Event;
use crate::header::{Header, FORMAT_VERSION};
use crate::{CONSOLE_FILE, EVENTS_FILE, HEADER_FILE};

/// Where one block sits in the `events` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// File offset of the block header.
    pub offset: u64,
    pub header: BlockHeader,
}

/// Where the intact part of an `events` stream ends, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub block: u64,
    pub reason: String,
}

/// One event with its place in the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub index: u64,
    pub event: Event,
    /// Bytes the event took in its block before compression.
    pub encoded_len: u32,
}

/// The `events` stream of a trace over any seekable source (a file, or bytes in memory for
/// fuzzing).
#[derive(Debug)]
pub struct EventStream<R> {
    src: R,
    path: PathBuf,
    blocks: Vec<BlockInfo>,
    damage: Option<Damage>,
    events: u64,
}

impl<R: Read + Seek> EventStream<R> {
    /// Check the stream's file header and index its blocks. `path` names it in errors.
    pub fn open(mut src: R, path: &Path) -> Result<Self, TraceError> {
        let io = |e| TraceError::io(path, e);
        let len = src.seek(SeekFrom::End(0)).map_err(io)?;
        src.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut fh = [0u8; EVENTS_FILE_HEADER_LEN as usize];
        let got = read_up_to(&mut src, &mut fh).map_err(io)?;
        if got < 8 || &fh[..8] != EVENTS_MAGIC {
            return Err(TraceError::BadMagic {
                path: path.to_owned(),
                found: fh[..got.min(8)].to_vec(),
                expected: "KRREVENT",
            });
        }
        if got < fh.len() {
            return Err(TraceError::Corrupt {
                path: path.to_owned(),
                offset: got as u64,
                block: 0,
                events_recovered: 0,
                reason: "file header is truncated".into(),
            });
        }
        let version = u32::from_le_bytes([fh[8], fh[9], fh[10], fh[11]]);
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut blocks = Vec::new();
        let mut damage = None;
        let mut off = EVENTS_FILE_HEADER_LEN;
        let mut events = 0u64;
        while off < len {
            let fail = |reason: String| Some(Damage { offset: off, block: blocks.len() as u64, reason });
            if len - off < BLOCK_HEADER_LEN as u64 {
                damage = fail(format!("truncated block header ({} of {BLOCK_HEADER_LEN} bytes)", len - off));
                break;
            }
            let mut hb = [0u8; BLOCK_HEADER_LEN];
            src.seek(SeekFrom::Start(off)).map_err(io)?;
            src.read_exact(&mut hb).map_err(io)?;
            let header = match BlockHeader::decode(&hb) {
                Ok(h) => h,
                Err(reason) => {
                    damage = fail(reason);
                    break;
                }
            };
            if header.first_event != events {
                damage = fail(format!("block starts at event {}, expected {events}", header.first_event));
                break;
            }
            let end = off + BLOCK_HEADER_LEN as u64 + header.stored_len as u64;
            if end > len {
                damage = fail(format!(
                    "truncated block payload ({} of {} bytes)",
                    len - off - BLOCK_HEADER_LEN as u64,
                    header.stored_len
                ));
                break;
            }
            blocks.push(BlockInfo { offset: off, header });
            events += header.events as u64;
            off = end;
        }
        Ok(EventStream { src, path: path.to_owned(), blocks, damage, events })
    }

    /// The block index.
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.blocks
    }

    /// Events in the indexed (structurally intact) blocks.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// Damage found while indexing, if any.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// The block holding event `index`.
    pub fn block_of(&self, index: u64) -> Option<usize> {
        if index >= self.events {
            return None;
        }
        Some(self.blocks.partition_point(|b| b.header.first_event <= index) - 1)
    }

    fn corrupt(&self, block: usize, offset: u64, recovered: u64, reason: String) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            offset,
            block: block as u64,
            events_recovered: recovered,
            reason,
        }
    }

    /// Read block `i`, check its payload checksum and decompress it.
    fn load_block(&mut self, i: usize) -> Result<Vec<u8>, TraceError> {
        let info = self.blocks[i];
        let h = info.header;
        let mut stored = vec![0u8; h.stored_len as usize];
        let path = self.path.clone();
        self.src
            .seek(SeekFrom::Start(info.offset + BLOCK_HEADER_LEN as u64))
            .map_err(|e| TraceError::io(&path, e))?;
        self.src.read_exact(&mut stored).map_err(|e| TraceError::io(&path, e))?;
        if crc32fast::hash(&stored) != h.payload_crc {
            return Err(self.corrupt(
                i,
                info.offset,
                h.first_event,
                "block payload checksum mismatch".into(),
            ));
        }
        decompress(h.codec, &stored, h.raw_len as usize)
            .map_err(|r| self.corrupt(i, info.offset, h.first_event, r))
    }

    /// Iterate over every event from `start` on; see [`EventIter`].
    pub fn events_from(&mut self, start: u64) -> EventIter<'_, R> {
        let block = self.block_of(start).unwrap_or(self.blocks.len());
        EventIter { stream: self, block, skip: start, cur: None, done: false }
    }
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Yields `Ok` events in order; after the last intact event it yields at most one `Err`
/// describing the damage (checksum, decode or truncation), then stops. Blocks are decoded lazily,
/// one at a time.
#[derive(Debug)]
pub struct EventIter<'a, R> {
    stream: &'a mut EventStream<R>,
    /// The next block to load.
    block: usize,
    skip: u64,
    cur: Option<CurrentBlock>,
    done: bool,
}

#[derive(Debug)]
struct CurrentBlock {
    index: usize,
    dec: Decoder<Vec<u8>>,
    next_event: u64,
    end_event: u64,
}

impl<R: Read + Seek> EventIter<'_, R> {
    fn fail(&mut self, e: TraceError) -> Option<Result<TraceEvent, TraceError>> {
        self.done = true;
        self.cur = None;
        Some(Err(e))
    }
}

impl<R: Read + Seek> Iterator for EventIter<'_, R> {
    type Item = Result<TraceEvent, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(cur) = &mut self.cur {
                let start = cur.dec.offset();
                match cur.dec.next_event() {
                    Ok(Some(event)) if cur.next_event < cur.end_event => {
                        let index = cur.next_event;
                        cur.next_event += 1;
                        if index < self.skip {
                            continue;
                        }
                        let encoded_len = (cur.dec.offset() - start) as u32;
                        return Some(Ok(TraceEvent { index, event, encoded_len }));
                    }
                    Ok(None) if cur.next_event == cur.end_event => {
                        self.cur = None;
                        continue;
                    }
                    Ok(_) => {
                        let (i, first) = (cur.index, self.stream.blocks[cur.index].header.first_event);
                        let reason = format!(
                            "block holds a different number of events than its header says ({})",
                            cur.end_event - first
                        );
                        let e = self.stream.corrupt(i, self.stream.blocks[i].offset, first, reason);
                        return self.fail(e);
                    }
                    Err(err) => {
                        let (i, first) = (cur.index, self.stream.blocks[cur.index].header.first_event);
                        let e = self.stream.corrupt(i, self.stream.blocks[i].offset, first, err.to_string());
                        return self.fail(e);
                    }
                }
            }
            if self.block >= self.stream.blocks.len() {
                self.done = true;
                let d = self.stream.damage.clone()?;
                let recovered = self.stream.events;
                return Some(Err(TraceError::Corrupt {
                    path: self.stream.path.clone(),
                    offset: d.offset,
                    block: d.block,
                    events_recovered: recovered,
                    reason: d.reason,
                }));
            }
            let i = self.block;
            match self.stream.load_block(i) {
                Ok(raw) => {
                    let h = self.stream.blocks[i].header;
                    self.cur = Some(CurrentBlock {
                        index: i,
                        dec: Decoder::new(raw),
                        next_event: h.first_event,
                        end_event: h.first_event + h.events as u64,
                    });
                    self.block += 1;
                }
                Err(e) => return self.fail(e),
            }
        }
    }
}

/// An open trace directory.
#[derive(Debug)]
pub struct TraceReader {
    dir: PathBuf,
    header: Header,
    events: EventStream<BufReader<File>>,
}

impl TraceReader {
    /// Open the trace in `dir`: parse the header and index the events.
    pub fn open(dir: &Path) -> Result<Self, TraceError> {
        if !dir.is_dir() {
            return Err(TraceError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a trace directory"),
            ));
        }
        let header = Header::read(&dir.join(HEADER_FILE))?;
        let path = dir.join(EVENTS_FILE);
        let file = File::open(&path).map_err(|e| TraceError::io(&path, e))?;
        let events = EventStream::open(BufReader::new(file), &path)?;
        Ok(TraceReader { dir: dir.to_owned(), header, events })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether the recorder finished the trace (it wrote the completion record).
    pub fn is_complete(&self) -> bool {
        self.header.completion.is_some()
    }

    pub fn stream(&mut self) -> &mut EventStream<BufReader<File>> {
        &mut self.events
    }

    /// The events stream, for a reader that keeps it beyond the trace directory's other files.
    pub fn into_stream(self) -> EventStream<BufReader<File>> {
        self.events
    }

    /// Iterate over all events.
    pub fn events(&mut self) -> EventIter<'_, BufReader<File>> {
        self.events.events_from(0)
    }

    /// The console bytes. A killed recorder may leave fewer bytes than the console markers name.
    pub fn console(&self) -> Result<Vec<u8>, TraceError> {
        let path = self.dir.join(CONSOLE_FILE);
        std::fs::read(&path).map_err(|e| TraceError::io(path, e))
    }
}
