//! The events of a trace as replay reads them: by index, decoded a block at a time, with only a
//! few blocks in memory.
//!
//! Replay moves forward through the log, looks a little ahead (a hook's event behind an
//! interrupt, a vCPU's next event) and, under a debugger, jumps back to checkpoints. Holding
//! every decoded event made its memory grow with the trace (1.5 GiB for a trace whose
//! user-memory reads held 1.33 GB); here memory is bounded by [`RESIDENT_BLOCKS`] decoded
//! blocks (a block closes once its encoded events reach the writer's target, 256 KiB by
//! default) plus a few bytes per block of index.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::ops::Deref;
use std::rc::Rc;

use krr_trace::{Event, EventStream};

/// Decoded blocks kept in memory at once (least recently used ones are dropped first).
pub const RESIDENT_BLOCKS: usize = 8;

/// Where one block's events are, and which vCPUs they belong to.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Index of the block's first event.
    first: usize,
    /// Events of the block replay uses (fewer than the block holds if it is damaged).
    len: usize,
    /// Bit v set: the block has an event of vCPU v other than a console marker.
    vcpus: u32,
}

struct Store {
    /// The events file; `None` when every block is resident (events given in memory).
    stream: Option<EventStream<BufReader<File>>>,
    resident: Vec<Option<Rc<[Event]>>>,
    /// Resident block numbers, least recently used first.
    lru: VecDeque<usize>,
    /// Why a block could not be read again (the file changed under replay).
    error: Option<String>,
    loads: u64,
}

/// One event of [`Events`]; it keeps its decoded block alive while it is held.
#[derive(Clone)]
pub struct EventRef {
    block: Rc<[Event]>,
    at: usize,
}

impl Deref for EventRef {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.block[self.at]
    }
}

impl fmt::Debug for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// (vCPU, from, skipped) and the answer of [`Events::next_of`].
type NextOf = (u32, usize, usize, Option<usize>);

/// A trace's events, indexed from 0; see the module comment.
pub struct Events {
    spans: Vec<Span>,
    len: usize,
    last: Option<Event>,
    store: RefCell<Store>,
    /// The last [`Events::next_of`] question and answer.
    memo: Cell<Option<NextOf>>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("len", &self.len).field("blocks", &self.spans.len()).finish()
    }
}

fn vcpu_bit(e: &Event) -> u32 {
    match e {
        Event::Console { .. } => 0,
        e => 1u32.checked_shl(e.vcpu()).unwrap_or(0),
    }
}

impl From<Vec<Event>> for Events {
    /// Events already in memory (tests, tools): one resident block.
    fn from(events: Vec<Event>) -> Self {
        let len = events.len();
        let vcpus = events.iter().fold(0, |m, e| m | vcpu_bit(e));
        let last = events.last().cloned();
        let block: Rc<[Event]> = events.into();
        Events {
            spans: vec![Span { first: 0, len, vcpus }],
            len,
            last,
            store: RefCell::new(Store {
                stream: None,
                resident: vec![Some(block)],
                lru: VecDeque::new(),
                error: None,
                loads: 0,
            }),
            memo: Cell::new(None),
        }
    }
}

impl Events {
    /// Index the events of `stream` in one pass (decoding each block once and dropping it).
    /// Returns the events before the first damaged one and, if there is damage, what it is.
    pub fn open(mut stream: EventStream<BufReader<File>>) -> (Self, Option<String>) {
        let firsts: Vec<usize> = stream.blocks().iter().map(|b| b.header.first_event as usize).collect();
        let mut spans: Vec<Span> = Vec::with_capacity(firsts.len());
        let mut last = None;
        let mut damage = None;
        let mut len = 0;
        for item in stream.events_from(0) {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    damage = Some(e.to_string());
                    break;
                }
            };
            let i = ev.index as usize;
            while spans.len() < firsts.len() && firsts[spans.len()] <= i {
                spans.push(Span { first: firsts[spans.len()], len: 0, vcpus: 0 });
            }
            let span = spans.last_mut().expect("an event lies in an indexed block");
            span.len += 1;
            span.vcpus |= vcpu_bit(&ev.event);
            len = i + 1;
            last = Some(ev.event);
        }
        spans.retain(|s| s.len > 0);
        let resident = vec![None; spans.len()];
        let events = Events {
            spans,
            len,
            last,
            store: RefCell::new(Store {
                stream: Some(stream),
                resident,
                lru: VecDeque::new(),
                error: None,
                loads: 0,
            }),
            memo: Cell::new(None),
        };
        (events, damage)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last event.
    pub fn last(&self) -> Option<&Event> {
        self.last.as_ref()
    }

    /// Event `i`, or `None` past the end (or if its block could not be read again: see
    /// [`Events::error`]).
    pub fn get(&self, i: usize) -> Option<EventRef> {
        if i >= self.len {
            return None;
        }
        let b = self.spans.partition_point(|s| s.first <= i) - 1;
        let span = self.spans[b];
        let block = self.block(b)?;
        // The spans are contiguous and the last ends at `len`: `i` lies inside span `b`.
        Some(EventRef { block, at: i - span.first })
    }

    /// Every event from `from` on, in order.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = EventRef> + '_ {
        (from..self.len).map_while(|i| self.get(i))
    }

    /// The index of vCPU `v`'s first event at or after `from` that is not a console marker
    /// and not `skip`ped; `skipped` is how many indices `skip` excludes. Blocks without an event
    /// of `v` are not read. The answer is reused while the question repeats: replay asks at
    /// every acquire spin, and at one cursor its skipped set only grows (so its size names it,
    /// also after a debugger restored a checkpoint).
    pub fn next_of(
        &self,
        v: u32,
        from: usize,
        skipped: usize,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if let Some((mv, mf, ms, r)) = self.memo.get() {
            if (mv, mf, ms) == (v, from, skipped) {
                return r;
            }
        }
        let r = self.find_next_of(v, from, &skip);
        self.memo.set(Some((v, from, skipped, r)));
        r
    }

    fn find_next_of(&self, v: u32, from: usize, skip: &impl Fn(usize) -> bool) -> Option<usize> {
        let bit = 1u32.checked_shl(v)?;
        let start = self.spans.partition_point(|s| s.first + s.len <= from);
        for b in start..self.spans.len() {
            let span = self.spans[b];
            if span.vcpus & bit == 0 {
                continue;
            }
            let block = self.block(b)?;
            for i in from.max(span.first)..span.first + span.len {
                let e = &block[i - span.first];
                if vcpu_bit(e) == bit && !skip(i) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Why the events file could not be read again during replay, if it could not.
    pub fn error(&self) -> Option<String> {
        self.store.borrow().error.clone()
    }

    /// Blocks decoded since opening (the first pass of [`Events::open`] not counted).
    pub fn loads(&self) -> u64 {
        self.store.borrow().loads
    }

    /// Decoded blocks held now.
    pub fn resident(&self) -> usize {
        self.store.borrow().resident.iter().filter(|b| b.is_some()).count()
    }

    fn block(&self, b: usize) -> Option<Rc<[Event]>> {
        let mut st = self.store.borrow_mut();
        if let Some(block) = st.resident[b].clone() {
            if let Some(p) = st.lru.iter().position(|&x| x == b) {
                st.lru.remove(p);
                st.lru.push_back(b);
            }
            return Some(block);
        }
        let span = self.spans[b];
        let stream = st.stream.as_mut()?;
        let read: Result<Vec<Event>, _> =
            stream.events_from(span.first as u64).take(span.len).map(|r| r.map(|t| t.event)).collect();
        let events = match read {
            Ok(v) if v.len() == span.len => v,
            Ok(v) => {
                let msg = format!(
                    "block {b} of the events file now holds {} events, {} when replay opened it (was the trace changed under replay?)",
                    v.len(),
                    span.len
                );
                st.error.get_or_insert(msg);
                return None;
            }
            Err(e) => {
                st.error.get_or_insert(format!("reading block {b} of the events file again: {e}"));
                return None;
            }
        };
        let block: Rc<[Event]> = events.into();
        st.loads += 1;
        st.resident[b] = Some(block.clone());
        st.lru.push_back(b);
        while st.lru.len() > RESIDENT_BLOCKS {
            let old = st.lru.pop_front().expect("non-empty");
            st.resident[old] = None;
        }
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krr_trace::{Codec, EndReason, Header, TraceReader, TraceWriter, WriterOptions};

    /// Console markers, user reads and RDTSCs of three vCPUs; vCPU 2's end in the first fifth.
    fn sample(n: usize) -> Vec<Event> {
        let vcpu = |i: usize| if i < n / 5 { (i % 3) as u32 } else { (i % 2) as u32 };
        (0..n)
            .map(|i| match i % 5 {
                0 => Event::Console { vcpu: 2, len: 1 },
                1 => Event::UserRead {
                    vcpu: vcpu(i),
                    read: krr_trace::UserReadKind::CopyFromUser,
                    addr: i as u64,
                    data: vec![i as u8; 64],
                },
                _ => Event::Rdtsc { vcpu: vcpu(i), tsc: i as u64, aux: None },
            })
            .collect()
    }

    fn write(dir: &std::path::Path, events: &[Event]) -> Vec<Event> {
        let opts = WriterOptions { block_target: 512, codec: Codec::Zstd, queue_depth: 2 };
        let mut w = TraceWriter::create(dir, Header::default(), opts).unwrap();
        for e in events {
            w.append(e).unwrap();
        }
        w.finish(0, EndReason::Poweroff, 0).unwrap();
        let mut all = events.to_vec();
        all.push(Event::End { vcpu: 0, reason: EndReason::Poweroff });
        all
    }

    fn open(dir: &std::path::Path) -> (Events, Option<String>) {
        Events::open(TraceReader::open(dir).unwrap().into_stream())
    }

    #[test]
    fn reads_any_event_with_a_bounded_number_of_blocks_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let want = write(tmp.path(), &sample(3000));
        let (ev, damage) = open(tmp.path());
        assert_eq!(damage, None);
        assert_eq!(ev.len(), want.len());
        assert!(ev.spans.len() > 4 * RESIDENT_BLOCKS, "{} blocks", ev.spans.len());
        assert_eq!(ev.last(), want.last());
        for (i, w) in want.iter().enumerate() {
            assert_eq!(&*ev.get(i).unwrap(), w, "event {i}");
        }
        assert!(ev.resident() <= RESIDENT_BLOCKS);
        // Backwards (a debugger's checkpoints) too.
        for i in (0..want.len()).rev().step_by(7) {
            assert_eq!(&*ev.get(i).unwrap(), &want[i], "event {i}");
        }
        assert!(ev.resident() <= RESIDENT_BLOCKS);
        assert!(ev.get(want.len()).is_none());
        assert_eq!(ev.error(), None);
    }

    #[test]
    fn next_of_finds_what_a_full_scan_finds() {
        let tmp = tempfile::tempdir().unwrap();
        let want = write(tmp.path(), &sample(2000));
        let (ev, _) = open(tmp.path());
        let mem = Events::from(want.clone());
        let naive = |v: u32, from: usize, skip: &dyn Fn(usize) -> bool| {
            (from..want.len())
                .find(|&i| !matches!(want[i], Event::Console { .. }) && want[i].vcpu() == v && !skip(i))
        };
        for from in (0..want.len()).step_by(37) {
            for v in 0..4 {
                let skip = |i: usize| i % 4 == 1;
                let n = (from..want.len()).filter(|&i| skip(i)).count();
                assert_eq!(ev.next_of(v, from, n, skip), naive(v, from, &skip), "vCPU {v} from {from}");
                assert_eq!(mem.next_of(v, from, n, skip), naive(v, from, &skip), "vCPU {v} from {from}");
                // Asked again with the answer now skipped (taken out of order): the next one;
                // and with the first skipped set again (a checkpoint restored): the first answer.
                if let Some(j) = naive(v, from, &skip) {
                    let skip2 = |i: usize| i % 4 == 1 || i == j;
                    assert_eq!(ev.next_of(v, from, n + 1, skip2), naive(v, from, &skip2));
                    assert_eq!(ev.next_of(v, from, n, skip), Some(j));
                }
            }
        }
        // vCPU 2's events end early: the later blocks are not read for it.
        let loads = ev.loads();
        assert_eq!(ev.next_of(2, want.len() / 2, 0, |_| false), None);
        assert_eq!(ev.loads(), loads);
    }

    #[test]
    fn a_damaged_tail_ends_the_events_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let want = write(tmp.path(), &sample(1000));
        let path = tmp.path().join(krr_trace::EVENTS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let mut damaged = bytes.clone();
        let at = bytes.len() * 2 / 3;
        damaged[at] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let (ev, damage) = open(tmp.path());
        assert!(damage.as_deref().is_some_and(|d| d.contains("damaged")), "{damage:?}");
        assert!(!ev.is_empty() && ev.len() < want.len());
        for (i, w) in want.iter().enumerate().take(ev.len()) {
            assert_eq!(&*ev.get(i).unwrap(), w);
        }
        assert!(ev.get(ev.len()).is_none());
        assert_eq!(ev.last(), Some(&want[ev.len() - 1]));
    }

    #[test]
    fn a_file_changed_under_replay_is_an_error_not_an_early_end() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), &sample(3000));
        let (ev, _) = open(tmp.path());
        let path = tmp.path().join(krr_trace::EVENTS_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        assert!(ev.get(ev.len() - 1).is_none());
        assert!(ev.error().is_some_and(|e| e.contains("events file")), "{:?}", ev.error());
    }
}
