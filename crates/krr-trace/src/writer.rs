//! Streaming trace writer.
//!
//! Events are encoded on the caller's thread into a block buffer; full blocks go through a
//! bounded channel to a background thread that compresses and appends them. Memory stays bounded
//! (a few blocks in flight) and the recording thread never waits on compression unless the disk
//! falls behind. Whatever reached the file before a crash or a kill stays readable: every block is
//! self-contained and checksummed, and the header is only ever replaced atomically.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::block::{compress, BlockHeader, Codec, BLOCK_HEADER_LEN, EVENTS_MAGIC};
use crate::codec::Encoder;
use crate::error::TraceError;
use crate::event::{EndReason, Event};
use crate::header::{Completion, Header, SnapshotRef, FORMAT_VERSION};
use crate::limits::{MAX_BLOCK_TARGET, MAX_EVENT_DATA, MAX_VCPUS};
use crate::{CONSOLE_FILE, EVENTS_FILE, HEADER_FILE, SNAPSHOT_FILE};

/// Tuning knobs of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Close a block once its raw bytes reach this size.
    pub block_target: usize,
    /// Compression codec for blocks.
    pub codec: Codec,
    /// Blocks queued for the background thread before `append` waits.
    pub queue_depth: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { block_target: 256 << 10, codec: Codec::Zstd, queue_depth: 4 }
    }
}

enum Msg {
    Block { raw: Vec<u8>, first_event: u64, events: u32 },
    Flush(SyncSender<Result<(), String>>),
}

/// What `finish` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    pub events: u64,
    pub blocks: u64,
    pub event_bytes: u64,
    pub console_bytes: u64,
}

/// Writes one trace directory.
#[derive(Debug)]
pub struct TraceWriter {
    dir: PathBuf,
    header: Header,
    opts: WriterOptions,
    encoder: Encoder,
    buf: Vec<u8>,
    buf_first: u64,
    buf_events: u32,
    next_event: u64,
    console: BufWriter<File>,
    console_bytes: u64,
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<u64>>,
    failure: Arc<Mutex<Option<String>>>,
    stats: Arc<Mutex<(u64, u64)>>,
    finished: bool,
}

impl TraceWriter {
    /// Create `dir` (or use it if empty) and start a trace in it with `header`.
    pub fn create(dir: &Path, header: Header, opts: WriterOptions) -> Result<Self, TraceError> {
        if opts.block_target == 0 || opts.block_target > MAX_BLOCK_TARGET {
            return Err(TraceError::Limit {
                what: "block target",
                value: opts.block_target as u64,
                max: MAX_BLOCK_TARGET as u64,
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| TraceError::io(dir, e))?;
        let mut entries = std::fs::read_dir(dir).map_err(|e| TraceError::io(dir, e))?;
        if entries.next().is_some() {
            return Err(TraceError::AlreadyExists { path: dir.to_owned() });
        }
        let mut header = header;
        header.completion = None;
        header.write_atomic(&dir.join(HEADER_FILE))?;

        let events_path = dir.join(EVENTS_FILE);
        let mut events = File::create(&events_path).map_err(|e| TraceError::io(&events_path, e))?;
        let mut fh = Vec::with_capacity(16);
        fh.extend_from_slice(EVENTS_MAGIC);
        fh.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        fh.extend_from_slice(&[0u8; 4]);
        events.write_all(&fh).map_err(|e| TraceError::io(&events_path, e))?;

        let console_path = dir.join(CONSOLE_FILE);
        let console = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&console_path)
            .map_err(|e| TraceError::io(&console_path, e))?;

        let (tx, rx) = sync_channel(opts.queue_depth.max(1));
        let failure = Arc::new(Mutex::new(None));
        let stats = Arc::new(Mutex::new((0u64, fh.len() as u64)));
        let thread = {
            let failure = failure.clone();
            let stats = stats.clone();
            let codec = opts.codec;
            std::thread::Builder::new()
                .name("krr-trace-writer".into())
                .spawn(move || block_thread(rx, events, events_path, codec, failure, stats))
                .map_err(|e| TraceError::io(dir, e))?
        };
        Ok(TraceWriter {
            dir: dir.to_owned(),
            header,
            opts,
            encoder: Encoder::new(),
            buf: Vec::with_capacity(opts.block_target + 4096),
            buf_first: 0,
            buf_events: 0,
            next_event: 0,
            console: BufWriter::new(console),
            console_bytes: 0,
            tx: Some(tx),
            thread: Some(thread),
            failure,
            stats,
            finished: false,
        })
    }

    /// The trace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the VMM writes the start snapshot; announce it with [`TraceWriter::set_snapshot`].
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// Number of events appended so far.
    pub fn events(&self) -> u64 {
        self.next_event
    }

    /// Record the start snapshot in the header (rewritten atomically at once).
    pub fn set_snapshot(&mut self, snapshot: SnapshotRef) -> Result<(), TraceError> {
        self.header.snapshot = Some(snapshot);
        self.header.write_atomic(&self.dir.join(HEADER_FILE))
    }

    fn check_failure(&self) -> Result<(), TraceError> {
        match self.failure.lock().map(|f| f.clone()) {
            Ok(Some(msg)) => Err(TraceError::WriterFailed(msg)),
            Ok(None) => Ok(()),
            Err(_) => Err(TraceError::WriterFailed("writer thread panicked".into())),
        }
    }

    /// Append one event.
    pub fn append(&mut self, ev: &Event) -> Result<(), TraceError> {
        if let Event::UserRead { data, .. } | Event::Dma { data, .. } = ev {
            if data.len() > MAX_EVENT_DATA {
                return Err(TraceError::Limit {
                    what: "event data length",
                    value: data.len() as u64,
                    max: MAX_EVENT_DATA as u64,
                });
            }
        }
        if ev.vcpu() >= MAX_VCPUS {
            return Err(TraceError::Limit {
                what: "vCPU number",
                value: ev.vcpu() as u64,
                max: MAX_VCPUS as u64 - 1,
            });
        }
        if self.buf_events == 0 {
            self.buf_first = self.next_event;
        }
        self.encoder.encode(ev, &mut self.buf);
        self.buf_events += 1;
        self.next_event += 1;
        if self.buf.len() >= self.opts.block_target {
            self.send_block()?;
        }
        Ok(())
    }

    /// Append console output: the bytes go to the `console` file, a [`Event::Console`] marker to
    /// the event stream at this point.
    pub fn console(&mut self, vcpu: u32, bytes: &[u8]) -> Result<(), TraceError> {
        if bytes.is_empty() {
            return Ok(());
        }
        for chunk in bytes.chunks(u32::MAX as usize) {
            self.console.write_all(chunk).map_err(|e| TraceError::io(self.dir.join(CONSOLE_FILE), e))?;
            self.console_bytes += chunk.len() as u64;
            self.append(&Event::Console { vcpu, len: chunk.len() as u32 })?;
        }
        Ok(())
    }

    fn send_block(&mut self) -> Result<(), TraceError> {
        self.check_failure()?;
        if self.buf_events == 0 {
            return Ok(());
        }
        let raw = std::mem::replace(&mut self.buf, Vec::with_capacity(self.opts.block_target + 4096));
        let msg = Msg::Block { raw, first_event: self.buf_first, events: self.buf_events };
        self.buf_events = 0;
        self.encoder.reset();
        self.tx
            .as_ref()
            .ok_or_else(|| TraceError::WriterFailed("writer already finished".into()))?
            .send(msg)
            .map_err(|_| TraceError::WriterFailed("writer thread stopped".into()))
    }

    /// Make everything appended so far durable: close the current block, write it and the console,
    /// and fsync both files.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.send_block()?;
        let console_path = self.dir.join(CONSOLE_FILE);
        self.console.flush().map_err(|e| TraceError::io(&console_path, e))?;
        self.console.get_ref().sync_data().map_err(|e| TraceError::io(&console_path, e))?;
        let (reply_tx, reply_rx) = sync_channel(1);
        let tx =
            self.tx.as_ref().ok_or_else(|| TraceError::WriterFailed("writer already finished".into()))?;
        tx.send(Msg::Flush(reply_tx))
            .map_err(|_| TraceError::WriterFailed("writer thread stopped".into()))?;
        match reply_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(TraceError::WriterFailed(msg)),
            Err(_) => Err(TraceError::WriterFailed("writer thread stopped".into())),
        }
    }

    /// Append the [`Event::End`] marker, make everything durable and write the completion record
    /// into the header. The trace is complete only after this returns `Ok`.
    pub fn finish(
        mut self,
        vcpu: u32,
        reason: EndReason,
        end_time_unix_ms: u64,
    ) -> Result<WriteSummary, TraceError> {
        self.append(&Event::End { vcpu, reason })?;
        self.flush()?;
        self.tx = None;
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| TraceError::WriterFailed("writer thread panicked".into()))?;
        }
        self.check_failure()?;
        let (blocks, event_bytes) = self.stats.lock().map(|s| *s).unwrap_or((0, 0));
        let summary =
            WriteSummary { events: self.next_event, blocks, event_bytes, console_bytes: self.console_bytes };
        self.header.completion = Some(Completion {
            end_reason: reason,
            end_time_unix_ms,
            events: summary.events,
            blocks,
            event_bytes,
            console_bytes: self.console_bytes,
        });
        self.header.write_atomic(&self.dir.join(HEADER_FILE))?;
        self.finished = true;
        Ok(summary)
    }
}

impl Drop for TraceWriter {
    /// A writer dropped without `finish` (an error path) still writes what it has, so the trace
    /// stays readable up to its last event; it is just not marked complete.
    fn drop(&mut self) {
        if !self.finished && self.tx.is_some() {
            let _ = self.send_block();
            let _ = self.console.flush();
            self.tx = None;
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn block_thread(
    rx: Receiver<Msg>,
    file: File,
    path: PathBuf,
    codec: Codec,
    failure: Arc<Mutex<Option<String>>>,
    stats: Arc<Mutex<(u64, u64)>>,
) -> u64 {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut zstd = None;
    let mut blocks = 0u64;
    let mut failed: Option<String> = None;
    let fail = |msg: String, failed: &mut Option<String>| {
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(msg.clone());
        }
        failed.get_or_insert(msg);
    };
    for msg in rx {
        match msg {
            Msg::Block { raw, first_event, events } => {
                if failed.is_some() {
                    continue;
                }
                let (used, stored) = compress(codec, &raw, &mut zstd);
                let h = BlockHeader {
                    codec: used,
                    events,
                    first_event,
                    raw_len: raw.len() as u32,
                    stored_len: stored.len() as u32,
                    payload_crc: crc32fast::hash(&stored),
                };
                let res = out.write_all(&h.encode()).and_then(|_| out.write_all(&stored));
                match res {
                    Ok(()) => {
                        blocks += 1;
                        if let Ok(mut s) = stats.lock() {
                            s.0 = blocks;
                            s.1 += (BLOCK_HEADER_LEN + stored.len()) as u64;
                        }
                    }
                    Err(e) => fail(format!("{}: {e}", path.display()), &mut failed),
                }
            }
            Msg::Flush(reply) => {
                if failed.is_none() {
                    if let Err(e) = out.flush().and_then(|_| out.get_ref().sync_data()) {
                        fail(format!("{}: {e}", path.display()), &mut failed);
                    }
                }
                let _ = reply.send(failed.clone().map_or(Ok(()), Err));
            }
        }
    }
    if failed.is_none() {
        if let Err(e) = out.flush() {
            fail(format!("{}: {e}", path.display()), &mut failed);
        }
    }
    blocks
}
