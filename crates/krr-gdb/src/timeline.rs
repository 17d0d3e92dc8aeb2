//! Moving through a replay in both directions: periodic checkpoints of the [`Session`] (memory
//! shared copy-on-write), `goto(position)` by restoring the nearest earlier checkpoint and
//! replaying forward (replay is deterministic, so this is the same machine), and the backward
//! searches `reverse-continue` needs.

use std::collections::BTreeMap;

use krr_emu::Cpu;
use krr_replay::{Checkpoint, Session, Stop, Watch};

/// Checkpoints by position, thinned to at most `max`: the ones to drop first are those whose
/// neighbours are close together and far from where the debugger is.
#[derive(Debug)]
pub struct Store<T> {
    map: BTreeMap<u64, T>,
    max: usize,
}

impl<T> Store<T> {
    pub fn new(max: usize) -> Self {
        Store { map: BTreeMap::new(), max: max.max(2) }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, at: u64) -> bool {
        self.map.contains_key(&at)
    }

    /// The latest checkpoint at or before `at`.
    pub fn at_or_before(&self, at: u64) -> Option<(u64, &T)> {
        self.map.range(..=at).next_back().map(|(k, v)| (*k, v))
    }

    /// Whether there is a checkpoint in `(from, to]`.
    pub fn any_in(&self, from: u64, to: u64) -> bool {
        from < to && self.map.range(from + 1..=to).next().is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }

    /// Add one taken at `at`; `now` is where the debugger is (checkpoints near it are kept).
    /// The first checkpoint (the start) is never dropped.
    pub fn insert(&mut self, at: u64, t: T, now: u64) {
        self.map.insert(at, t);
        while self.map.len() > self.max {
            let keys: Vec<u64> = self.map.keys().copied().collect();
            let mut best: Option<(f64, u64)> = None;
            for w in 1..keys.len() {
                let (prev, k) = (keys[w - 1], keys[w]);
                let next = keys.get(w + 1).copied().unwrap_or(k);
                let span = (next - prev) as f64;
                let dist = k.abs_diff(now) as f64 + 1.0;
                let score = span / dist;
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, k));
                }
            }
            match best {
                Some((_, k)) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
    }
}

/// Near a `goto` target, checkpoints are this many times denser than the periodic ones.
const FINE: u64 = 64;

/// What a backward search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A boundary where `at(cpu)` was true.
    Break,
    /// The access to `watches[index]` at physical `addr` made by the instruction at this boundary.
    Watch { index: usize, addr: u64, write: bool },
    /// Nothing before: the machine is at the start.
    Begin,
}

/// A session with checkpoints.
#[derive(Debug)]
pub struct Timeline<'a> {
    pub session: Session<'a>,
    store: Store<Checkpoint>,
    /// Steps between periodic checkpoints.
    interval: u64,
}

impl<'a> Timeline<'a> {
    /// `interval`: steps between checkpoints; `max`: how many to keep.
    pub fn new(session: Session<'a>, interval: u64, max: usize) -> Self {
        let mut store = Store::new(max);
        store.insert(session.steps(), session.checkpoint(), session.steps());
        Timeline { session, store, interval: interval.max(1) }
    }

    pub fn checkpoints(&self) -> &Store<Checkpoint> {
        &self.store
    }

    /// Memory the checkpoints keep alive beyond the live machine: (checkpoints, private pages,
    /// page-table bytes).
    pub fn checkpoint_memory(&self) -> (usize, usize, usize) {
        let live = self.session.mem().snapshot();
        let mut private = 0usize;
        let mut newer: Option<&Checkpoint> = None;
        // Each checkpoint's pages not shared with the next one (or with the live machine).
        for (_, c) in self.store.iter().collect::<Vec<_>>().into_iter().rev() {
            private += c.memory().pages_not_shared_with(newer.map_or(&live, |n| n.memory()));
            newer = Some(c);
        }
        (self.store.len(), private, self.store.len() * live.pages() * 8)
    }

    /// Run forward like [`Session::run_until`], taking the periodic checkpoints on the way.
    pub fn run(
        &mut self,
        budget: u64,
        watches: &[Watch],
        stop: impl FnMut(&Cpu, u64) -> bool,
    ) -> Result<Stop, Box<krr_replay::Divergence>> {
        self.run_checkpointing(budget, watches, stop, u64::MAX)
    }

    /// [`Timeline::run`], with checkpoints every `interval / FINE` steps from `fine_from` on.
    fn run_checkpointing(
        &mut self,
        budget: u64,
        watches: &[Watch],
        mut stop: impl FnMut(&Cpu, u64) -> bool,
        fine_from: u64,
    ) -> Result<Stop, Box<krr_replay::Divergence>> {
        let end = self.session.steps().saturating_add(budget);
        let fine = (self.interval / FINE).max(1);
        loop {
            let now = self.session.steps();
            let mut next = (now / self.interval + 1) * self.interval;
            if fine_from != u64::MAX {
                next = next.min((now.max(fine_from) / fine + 1) * fine);
            }
            let r = self.session.run_until(next.min(end) - now, watches, &mut stop)?;
            let now = self.session.steps();
            let due = now % self.interval == 0 || (now >= fine_from && now % fine == 0);
            if due && !self.store.contains(now) && !self.session.ended() {
                self.store.insert(now, self.session.checkpoint(), now);
            }
            if r != Stop::Budget || now >= end {
                return Ok(r);
            }
        }
    }

    /// Put the machine at position `to` (or at the end, if it comes first). Divergences end the
    /// replay and are reported through [`Session::divergence`]. Checkpoints are taken densely
    /// just before `to`, so that stepping back from there again is quick.
    pub fn goto(&mut self, to: u64) {
        let now = self.session.steps();
        if to < now || self.store.any_in(now, to) {
            if let Some((_, c)) = self.store.at_or_before(to) {
                self.session.restore(c);
            }
        }
        let fine_from = to.saturating_sub(2 * (self.interval / FINE).max(1));
        while self.session.steps() < to {
            match self.run_checkpointing(to - self.session.steps(), &[], |_, _| false, fine_from) {
                Ok(Stop::End) | Err(_) => break,
                _ => {}
            }
        }
    }

    /// Save the machine now (for `monitor checkpoint`).
    pub fn save(&self) -> Checkpoint {
        self.session.checkpoint()
    }

    /// Back to a saved machine.
    pub fn restore(&mut self, c: &Checkpoint) {
        self.session.restore(c);
    }

    /// One step back. `false` at the start.
    pub fn step_back(&mut self) -> bool {
        let now = self.session.steps();
        if now == 0 {
            return false;
        }
        self.goto(now - 1);
        true
    }

    /// Go back to the latest boundary before this one where `at(cpu)` is true or (one boundary
    /// before) an instruction that accessed one of `watches`.
    pub fn search_back(&mut self, watches: &[Watch], mut at: impl FnMut(&Cpu) -> bool) -> Found {
        let mut hi = self.session.steps();
        while hi > 0 {
            let Some((lo, c)) = self.store.at_or_before(hi - 1) else { break };
            self.session.restore(c);
            let mut last: Option<(u64, Found)> = None;
            if at(self.session.cpu()) {
                last = Some((lo, Found::Break));
            }
            loop {
                let now = self.session.steps();
                if now >= hi {
                    break;
                }
                let mut hits = Vec::new();
                let r = self.run(hi - now, watches, |cpu, st| {
                    if st < hi && at(cpu) {
                        hits.push(st);
                    }
                    false
                });
                if let Some(&t) = hits.last() {
                    last = Some((t, Found::Break));
                }
                match r {
                    Ok(Stop::Watch { index, addr, write }) => {
                        let st = self.session.steps();
                        if st <= hi {
                            last = Some((st - 1, Found::Watch { index, addr, write }));
                        }
                        if st < hi && at(self.session.cpu()) {
                            last = Some((st, Found::Break));
                        }
                    }
                    Ok(Stop::Budget | Stop::Observer) => {}
                    Ok(Stop::End) | Err(_) => break,
                }
            }
            if let Some((t, found)) = last {
                self.goto(t);
                return found;
            }
            hi = lo;
        }
        self.goto(0);
        Found::Begin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_finds_the_nearest_earlier() {
        let mut s = Store::new(10);
        for k in [0u64, 100, 200, 300] {
            s.insert(k, k, k);
        }
        assert_eq!(s.at_or_before(250).map(|x| x.0), Some(200));
        assert_eq!(s.at_or_before(200).map(|x| x.0), Some(200));
        assert_eq!(s.at_or_before(99).map(|x| x.0), Some(0));
        assert!(s.any_in(150, 200));
        assert!(!s.any_in(200, 299));
        assert!(!s.any_in(300, 300));
    }

    #[test]
    fn store_thins_far_and_dense_checkpoints_first() {
        let mut s = Store::new(8);
        for k in 0..32u64 {
            s.insert(k * 10, (), k * 10);
        }
        assert_eq!(s.len(), 8);
        let keys: Vec<u64> = s.iter().map(|x| x.0).collect();
        assert_eq!(keys[0], 0, "the start stays");
        assert_eq!(*keys.last().unwrap(), 310, "the newest stays");
        // Denser near the present than far from it.
        let gaps: Vec<u64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.last().unwrap() <= gaps.first().unwrap(), "{keys:?}");
        // Everything between two kept checkpoints is still reachable from the earlier one.
        assert!(s.at_or_before(155).map(|x| x.0).unwrap() <= 155);
    }
}
