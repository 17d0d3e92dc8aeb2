//! The host half of the split recorder (DESIGN §3): moves the guest agent's ring into a trace.
//!
//! The same code serves both backends. The backend stops the vCPU at the agent's port writes
//! (start, flush, panic) and at its own pauses, and hands the recorder a way to read guest
//! memory. The recorder only reads guest memory: after a flush exit the guest itself starts its
//! ring over, so the guest never sees anything the host wrote (docs/guest-agent.md).

pub mod ring;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use krr_trace::{EndReason, Event, SnapshotRef, TraceError, TraceWriter, WriteSummary};

use ring::{parse_records, RecordBody};
pub use ring::{RingError, RingHeader, CTRL_PANIC, CTRL_START, HEADER_SIZE, PORT_CTRL, PORT_FLUSH};

/// Default size of the ring, header included.
pub const DEFAULT_RING_BYTES: u64 = 4 << 20;

/// How often the recorder makes what it has written durable, so a killed recorder leaves a
/// trace readable up to a recent block.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where the ring lives in guest-physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLocation {
    pub gpa: u64,
    pub size: u64,
}

impl RingLocation {
    /// The ring at the top of `mem_bytes` of RAM (2 MiB aligned so it never splits a large page).
    pub fn top_of(mem_bytes: u64, size: u64) -> Self {
        let gpa = (mem_bytes & !0xfff).saturating_sub(size) & !((2 << 20) - 1);
        RingLocation { gpa, size }
    }

    /// The kernel command line words that tell the agent where the ring is and when to start.
    pub fn cmdline(&self, start: StartPoint) -> String {
        let mut s = format!("krr.ring={:#x},{}", self.gpa, self.size);
        if start != StartPoint::Init {
            s.push_str(&format!(" krr.start={}", start.name()));
        }
        s
    }

    /// The ring a kernel command line names (`krr.ring=ADDR,SIZE`), if any: a VM saved by
    /// `krr record --save-snapshot` carries its ring in the command line it booted with.
    pub fn from_cmdline(cmdline: &str) -> Option<Self> {
        let arg = cmdline.split_whitespace().find_map(|w| w.strip_prefix("krr.ring="))?;
        let (gpa, size) = arg.split_once(',')?;
        let gpa = u64::from_str_radix(gpa.strip_prefix("0x")?, 16).ok()?;
        Some(RingLocation { gpa, size: size.parse().ok()? })
    }

    /// Whether the agent has started recording into this ring (its header says `active`); the
    /// header is all zeroes until it starts.
    pub fn agent_started(&self, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Result<bool, RecorderError> {
        let gpa = self.gpa + RingHeader::ACTIVE_OFFSET as u64;
        let mut b = [0u8; 4];
        if !read(gpa, &mut b) {
            return Err(RecorderError::Memory { gpa });
        }
        Ok(u32::from_le_bytes(b) != 0)
    }
}

/// Where in the guest's life the agent starts recording (`krr.start=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPoint {
    /// Just before the kernel runs `/init` (the default): a workload's recording.
    #[default]
    Init,
    /// After the last initcall: the end of the boot and the workload, from a VM saved before.
    Late,
    /// As early in boot as the agent can run: the kernel alone.
    Boot,
}

impl StartPoint {
    /// The `krr.start=` value.
    pub fn name(self) -> &'static str {
        match self {
            StartPoint::Init => "init",
            StartPoint::Late => "late",
            StartPoint::Boot => "boot",
        }
    }

    /// The start point called `name` (`init`, `late`, `boot`).
    pub fn parse(name: &str) -> Option<Self> {
        [StartPoint::Init, StartPoint::Late, StartPoint::Boot].into_iter().find(|p| p.name() == name)
    }

    /// The start point a kernel command line asks for (the last `krr.start=` word, as the
    /// kernel reads it; none: init).
    pub fn from_cmdline(cmdline: &str) -> Self {
        cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("krr.start="))
            .next_back()
            .and_then(Self::parse)
            .unwrap_or_default()
    }
}

/// Errors that end a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("guest agent ring: {0}")]
    Ring(#[from] RingError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("cannot read the ring at {gpa:#x} from guest memory")]
    Memory { gpa: u64 },
    #[error("the guest agent flushed {used} bytes, more than the data area holds")]
    BadFlush { used: u64 },
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
}

/// What a finished recording reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    pub dir: PathBuf,
    pub end_reason: EndReason,
    pub events: u64,
    pub event_bytes: u64,
    pub console_bytes: u64,
    /// Times the guest filled its ring and the recorder drained it synchronously.
    pub ring_flushes: u64,
    /// Ring bytes turned into events (records as the agent wrote them, before encoding).
    pub ring_bytes: u64,
    /// Time the recorder spent draining full rings, the guest waiting (total, longest).
    pub flush_stall: (Duration, Duration),
    /// Inputs whose log slot was reserved but never filled (the kernel stopped inside them).
    pub unfinished_inputs: u64,
    pub snapshot_bytes: u64,
    /// Where the agent started (the `krr.start=` of the recorded kernel's command line).
    pub start: StartPoint,
}

/// How a recording is going, reported about once a second (a progress line on a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordProgress {
    /// Events written to the trace so far.
    pub events: u64,
    /// Times the guest filled its ring and waited for the recorder.
    pub ring_flushes: u64,
    /// Ring bytes turned into events so far.
    pub ring_bytes: u64,
    /// Since the agent started recording.
    pub elapsed: Duration,
}

/// Receives [`RecordProgress`] while a recording runs.
#[derive(Clone)]
pub struct ProgressSink(pub std::sync::Arc<dyn Fn(&RecordProgress) + Send + Sync>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// Drains the ring into a [`TraceWriter`].
#[derive(Debug)]
pub struct Recorder {
    ring: RingLocation,
    start: StartPoint,
    writer: TraceWriter,
    /// Bytes of the current data area already turned into events.
    consumed: u64,
    /// Records waiting for an earlier sequence number (a user read still in flight).
    pending: BTreeMap<u64, Event>,
    next_seq: u64,
    started: bool,
    panicked: bool,
    flushes: u64,
    ring_bytes: u64,
    flush_stall: (Duration, Duration),
    console_sent: usize,
    last_sync: Instant,
    snapshot_bytes: u64,
    scratch: Vec<u8>,
    records: Vec<ring::Record>,
    progress: Option<ProgressSink>,
    started_at: Option<Instant>,
}

impl Recorder {
    pub fn new(writer: TraceWriter, ring: RingLocation, start: StartPoint) -> Self {
        Recorder {
            ring,
            start,
            writer,
            consumed: 0,
            pending: BTreeMap::new(),
            next_seq: 0,
            started: false,
            panicked: false,
            flushes: 0,
            ring_bytes: 0,
            flush_stall: (Duration::ZERO, Duration::ZERO),
            console_sent: 0,
            last_sync: Instant::now(),
            snapshot_bytes: 0,
            scratch: Vec::new(),
            records: Vec::new(),
            progress: None,
            started_at: None,
        }
    }

    /// Report progress to `sink` about once a second once the agent has started.
    pub fn with_progress(mut self, sink: Option<ProgressSink>) -> Self {
        self.progress = sink;
        self
    }

    /// Whether the guest agent has started recording.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the guest agent reported a panic.
    pub fn panicked(&self) -> bool {
        self.panicked
    }

    /// Where the start snapshot goes.
    pub fn snapshot_path(&self) -> PathBuf {
        self.writer.snapshot_path()
    }

    /// The agent started recording (`PORT_CTRL` = `CTRL_START`); the caller has written the
    /// start snapshot to [`Recorder::snapshot_path`].
    pub fn on_start(&mut self) -> Result<(), RecorderError> {
        let path = self.writer.snapshot_path();
        let data = std::fs::read(&path).map_err(|err| RecorderError::Io { path: path.clone(), err })?;
        self.snapshot_bytes = data.len() as u64;
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        self.writer.set_snapshot(SnapshotRef {
            file,
            bytes: data.len() as u64,
            crc32: crc32fast::hash(&data),
        })?;
        self.started = true;
        tracing::info!(snapshot_bytes = self.snapshot_bytes, "the guest agent started recording");
        self.started_at = Some(Instant::now());
        self.consumed = 0;
        Ok(())
    }

    /// The agent's ring was full: it wrote the used length to `PORT_FLUSH` and will start over
    /// when the vCPU resumes.
    pub fn on_flush(
        &mut self,
        used: u64,
        read: &dyn Fn(u64, &mut [u8]) -> bool,
    ) -> Result<(), RecorderError> {
        if used > self.ring.size - HEADER_SIZE {
            return Err(RecorderError::BadFlush { used });
        }
        let t = Instant::now();
        self.take(used, read)?;
        self.consumed = 0;
        self.flushes += 1;
        let stall = t.elapsed();
        self.flush_stall = (self.flush_stall.0 + stall, self.flush_stall.1.max(stall));
        tracing::debug!(
            used,
            flush = self.flushes,
            stall_us = stall.as_micros() as u64,
            events = self.writer.events(),
            "ring flush"
        );
        Ok(())
    }

    /// The agent reported a panic (`PORT_CTRL` = `CTRL_PANIC`), after flushing its ring.
    pub fn on_panic(&mut self) {
        tracing::info!(events = self.writer.events(), "the guest agent reported a kernel panic");
        self.panicked = true;
    }

    /// Move every complete record the guest has published into the trace. Call whenever the
    /// vCPUs are stopped (the header's `head` is then stable).
    pub fn drain(&mut self, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Result<(), RecorderError> {
        if !self.started {
            return Ok(());
        }
        let mut hb = [0u8; RingHeader::LEN];
        if !read_paged(read, self.ring.gpa, &mut hb) {
            return Err(RecorderError::Memory { gpa: self.ring.gpa });
        }
        let h = RingHeader::parse(&hb, self.ring.size)?;
        if h.flushes < self.flushes {
            // A flush exit was served but the guest has not started its ring over yet: its
            // head still counts the records already taken.
            return Ok(());
        }
        if h.head < self.consumed {
            // Only a flush resets head, and flushes are seen by `on_flush`.
            return Err(RingError::BadHeader(format!(
                "head went back from {} to {} without a flush",
                self.consumed, h.head
            ))
            .into());
        }
        self.take(h.head, read)
    }

    /// Parse data-area bytes `consumed..used` into events.
    fn take(&mut self, used: u64, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Result<(), RecorderError> {
        if used <= self.consumed {
            return Ok(());
        }
        let gpa = self.ring.gpa + HEADER_SIZE + self.consumed;
        self.scratch.resize((used - self.consumed) as usize, 0);
        if !read_paged(read, gpa, &mut self.scratch) {
            return Err(RecorderError::Memory { gpa });
        }
        self.records.clear();
        parse_records(&self.scratch, &mut self.records).map_err(|e| match e {
            RingError::BadRecord { offset, msg } => {
                RingError::BadRecord { offset: offset + self.consumed as usize, msg }
            }
            other => other,
        })?;
        self.ring_bytes += used - self.consumed;
        self.consumed = used;
        for r in std::mem::take(&mut self.records) {
            match r.body {
                RecordBody::Event(ev) => {
                    self.pending.insert(r.seq, ev);
                }
                RecordBody::EndPanic => self.panicked = true,
            }
        }
        // Emit everything that is now in sequence.
        while let Some(ev) = self.pending.remove(&self.next_seq) {
            self.writer.append(&ev)?;
            self.next_seq += 1;
        }
        Ok(())
    }

    /// Append the console bytes the guest wrote since the last call. Drain the ring first so
    /// the console marker lands after the events before it. Output from before the start of
    /// recording is not part of the trace.
    pub fn console(&mut self, console: &crate::devices::Console) -> Result<(), RecorderError> {
        // One read of the new bytes, and the mark moved by exactly what was read: vCPU threads
        // (kvm) append concurrently, and reading the length and the bytes separately sent the
        // bytes appended in between twice (a doubled character in a two-vCPU kvm recording).
        let new = console.bytes_from(self.console_sent);
        if self.started && !new.is_empty() {
            self.writer.console(0, &new)?;
        }
        self.console_sent += new.len();
        Ok(())
    }

    /// Make what has been written durable, at most once per second.
    pub fn maybe_sync(&mut self) -> Result<(), RecorderError> {
        if self.last_sync.elapsed() >= FLUSH_EVERY {
            self.writer.flush()?;
            self.last_sync = Instant::now();
            if let (Some(sink), Some(started_at)) = (&self.progress, self.started_at) {
                sink.0(&RecordProgress {
                    events: self.writer.events(),
                    ring_flushes: self.flushes,
                    ring_bytes: self.ring_bytes,
                    elapsed: started_at.elapsed(),
                });
            }
        }
        Ok(())
    }

    /// Seal the trace: events still waiting behind an unfilled slot go out in order, then the
    /// end marker and the completion record.
    pub fn finish(mut self, reason: EndReason) -> Result<RecordSummary, RecorderError> {
        let unfinished = self.pending.keys().next().map_or(0, |&first| first - self.next_seq);
        let pending = std::mem::take(&mut self.pending);
        for (_, ev) in pending {
            self.writer.append(&ev)?;
        }
        let dir = self.writer.dir().to_owned();
        let end_ms = unix_ms();
        let WriteSummary { events, event_bytes, console_bytes, .. } =
            self.writer.finish(0, reason, end_ms)?;
        Ok(RecordSummary {
            dir,
            start: self.start,
            end_reason: reason,
            events,
            event_bytes,
            console_bytes,
            ring_flushes: self.flushes,
            ring_bytes: self.ring_bytes,
            flush_stall: self.flush_stall,
            unfinished_inputs: unfinished,
            snapshot_bytes: self.snapshot_bytes,
        })
    }
}

/// Read `buf` from `gpa` one page at a time (guest memory need not be contiguous on the host).
fn read_paged(read: &dyn Fn(u64, &mut [u8]) -> bool, gpa: u64, buf: &mut [u8]) -> bool {
    let mut done = 0usize;
    while done < buf.len() {
        let at = gpa + done as u64;
        let n = ((4096 - (at & 0xfff)) as usize).min(buf.len() - done);
        if !read(at, &mut buf[done..done + n]) {
            return false;
        }
        done += n;
    }
    true
}

/// `sha256:<hex>` of a kernel image, as the trace header names it.
pub fn content_hash(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", krr_trace::to_hex(&sha2::Sha256::digest(data)))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::ring::build::*;
    use super::*;
    use krr_trace::{Header, TraceReader, UserReadKind, WriterOptions};

    const SIZE: u64 = 64 * 1024;

    /// A fake guest memory holding a ring at 0.
    struct Mem(std::cell::RefCell<Vec<u8>>);
    impl Mem {
        fn set_data(&self, head: u64, seq: u64, data: &[u8]) {
            self.set_data_flushed(head, seq, 0, data)
        }
        fn set_data_flushed(&self, head: u64, seq: u64, flushes: u64, data: &[u8]) {
            let mut m = self.0.borrow_mut();
            m[..HEADER_SIZE as usize].copy_from_slice(&header_flushed(SIZE, head, seq, flushes));
            m[HEADER_SIZE as usize..HEADER_SIZE as usize + data.len()].copy_from_slice(data);
        }
        fn reader(&self) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
            move |gpa, buf| {
                let m = self.0.borrow();
                let Some(src) = m.get(gpa as usize..gpa as usize + buf.len()) else { return false };
                buf.copy_from_slice(src);
                true
            }
        }
    }

    fn rdtsc(seq: u64, tsc: u64) -> Vec<u8> {
        record(9, 0, seq, &words(&[tsc, u64::MAX]))
    }

    #[test]
    fn the_ring_and_start_point_round_trip_through_the_command_line() {
        let ring = RingLocation::top_of(256 << 20, DEFAULT_RING_BYTES);
        for start in [StartPoint::Init, StartPoint::Late, StartPoint::Boot] {
            let line = format!("console=ttyS0 {} quiet", ring.cmdline(start));
            assert_eq!(RingLocation::from_cmdline(&line), Some(ring), "{line}");
            assert_eq!(StartPoint::from_cmdline(&line), start, "{line}");
        }
        assert_eq!(ring.cmdline(StartPoint::Init), "krr.ring=0xfc00000,4194304");
        assert_eq!(RingLocation::from_cmdline("console=ttyS0 krr.ring=12,34"), None);
        assert_eq!(RingLocation::from_cmdline("console=ttyS0"), None);
        // As the kernel does: the last word wins; an unknown value is not a start point.
        assert_eq!(StartPoint::from_cmdline("krr.start=boot krr.start=late"), StartPoint::Late);
        assert_eq!(StartPoint::parse("later"), None);
    }

    #[test]
    fn the_agent_has_started_once_its_header_says_active() {
        let mem = Mem(std::cell::RefCell::new(vec![0u8; SIZE as usize]));
        let ring = RingLocation { gpa: 0, size: SIZE };
        assert!(!ring.agent_started(&mem.reader()).unwrap());
        mem.set_data(0, 0, &[]);
        assert!(ring.agent_started(&mem.reader()).unwrap());
        assert!(RingLocation { gpa: SIZE * 2, size: SIZE }.agent_started(&mem.reader()).is_err());
    }

    #[test]
    fn drains_reorders_flushes_and_seals() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t");
        let w = TraceWriter::create(&trace, Header::default(), WriterOptions::default()).unwrap();
        let mut rec = Recorder::new(w, RingLocation { gpa: 0, size: SIZE }, StartPoint::Init);
        std::fs::write(rec.snapshot_path(), b"snap").unwrap();
        rec.on_start().unwrap();
        let mem = Mem(std::cell::RefCell::new(vec![0u8; SIZE as usize]));

        // seq 0 start, seq 2 rdtsc; seq 1 (a user read) is still in flight.
        let mut d = record(1, 0, 0, &words(&[5]));
        d.extend(rdtsc(2, 100));
        mem.set_data(d.len() as u64, 3, &d);
        rec.drain(&mem.reader()).unwrap();
        let console = crate::devices::Console::new(crate::devices::Echo::Nothing);
        console.push(b"hello\n");
        rec.console(&console).unwrap();
        // The flush carries the user read (seq 1) and seq 3.
        let mut ur = vec![0, 0, 0, 0, 2, 0, 0, 0];
        ur.extend(words(&[0x1000]));
        ur.extend(b"hi");
        let mut d2 = d.clone();
        d2.extend(record(5, 0, 1, &ur));
        d2.extend(rdtsc(3, 200));
        mem.set_data(d.len() as u64, 4, &d2);
        rec.on_flush(d2.len() as u64, &mem.reader()).unwrap();
        // Until the guest has reset its head, a drain must not take the old records again.
        rec.drain(&mem.reader()).unwrap();
        // The guest starts over at 0.
        let d3 = rdtsc(4, 300);
        mem.set_data_flushed(d3.len() as u64, 5, 1, &d3);
        rec.drain(&mem.reader()).unwrap();
        rec.drain(&mem.reader()).unwrap(); // idempotent
        let s = rec.finish(EndReason::Poweroff).unwrap();
        assert_eq!((s.ring_flushes, s.unfinished_inputs), (1, 0));

        let mut r = TraceReader::open(&trace).unwrap();
        let evs: Vec<Event> = r.events().map(|e| e.unwrap().event).collect();
        let kinds: Vec<String> = evs.iter().map(|e| e.kind().to_string()).collect();
        assert_eq!(kinds, ["start", "console", "user_read", "rdtsc", "rdtsc", "rdtsc", "end"]);
        assert_eq!(
            evs[2],
            Event::UserRead { vcpu: 0, read: UserReadKind::CopyFromUser, addr: 0x1000, data: b"hi".to_vec() }
        );
        let tscs: Vec<u64> = evs
            .iter()
            .filter_map(|e| if let Event::Rdtsc { tsc, .. } = e { Some(*tsc) } else { None })
            .collect();
        assert_eq!(tscs, [100, 200, 300]);
        assert_eq!(r.header().completion.as_ref().unwrap().end_reason, EndReason::Poweroff);
        assert_eq!(r.header().snapshot.as_ref().unwrap().bytes, 4);
    }

    #[test]
    fn corrupt_ring_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let w =
            TraceWriter::create(&dir.path().join("t"), Header::default(), WriterOptions::default()).unwrap();
        let mut rec = Recorder::new(w, RingLocation { gpa: 0, size: SIZE }, StartPoint::Init);
        std::fs::write(rec.snapshot_path(), b"snap").unwrap();
        rec.on_start().unwrap();
        let mem = Mem(std::cell::RefCell::new(vec![0u8; SIZE as usize]));
        mem.set_data(16, 1, &record(77, 0, 0, &[]));
        let e = rec.drain(&mem.reader()).unwrap_err();
        assert!(e.to_string().contains("unknown record type 77"), "{e}");
        assert!(rec.on_flush(SIZE, &mem.reader()).is_err());
    }

    #[test]
    fn ring_goes_to_the_top_of_ram() {
        let r = RingLocation::top_of(512 << 20, DEFAULT_RING_BYTES);
        assert_eq!(r.gpa, (512 << 20) - DEFAULT_RING_BYTES);
        assert_eq!(r.cmdline(StartPoint::Boot), format!("krr.ring={:#x},{} krr.start=boot", r.gpa, r.size));
    }
}
