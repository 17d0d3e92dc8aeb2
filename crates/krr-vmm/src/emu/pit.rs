//! An 8254 programmable interval timer (ports 0x40-0x43) and port 0x61 (speaker gate and OUT2)
//! for the `emu` backend.
//!
//! The counters are not stepped: each channel remembers the PIT tick at which its count was
//! loaded, and counts, OUT levels and IRQ0 edges are computed from the virtual TSC the caller
//! passes in. PIT ticks lie on one global grid, tick(now) = floor(now * 1193182 / TSC_HZ), so
//! the TSC of any edge is known exactly and the caller can skip straight to it when idle.
//!
//! What Linux 6.1 uses is covered: channel 0 in mode 2 (periodic clockevent), mode 4 (its
//! oneshot clockevent), mode 0 (shutdown) and mode 3; channel 2 in mode 0 gated by port 0x61 for
//! TSC calibration; counter latch and read-back. Modes 1 and 5 (gate-triggered) are modelled
//! simply; BCD counting is not (the BCD bit is stored and reported, counts stay binary).

use super::lapic::TSC_HZ;

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// IRQ line of channel 0.
pub const PIT_IRQ: u8 = 0;

/// PIT ticks elapsed on the global grid at TSC `now`.
pub fn pit_ticks(now: u64) -> u64 {
    (now as u128 * PIT_HZ as u128 / TSC_HZ as u128) as u64
}

/// The first TSC at which `pit_ticks` reaches `tick`.
pub fn tsc_at_tick(tick: u64) -> u64 {
    (tick as u128 * TSC_HZ as u128).div_ceil(PIT_HZ as u128) as u64
}

/// One counter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Channel {
    /// 0..=5.
    mode: u8,
    /// 1 = LSB only, 2 = MSB only, 3 = LSB then MSB.
    access: u8,
    bcd: bool,
    /// Count register, 1..=65536 (a written 0 means 65536).
    reload: u32,
    /// A full count has been written since the last control word.
    armed: bool,
    /// Status bit 6: a control word or count was written and not yet loaded.
    null_count: bool,
    /// Access mode 3: the LSB written, waiting for the MSB.
    write_lsb: Option<u8>,
    /// Access mode 3: the next unlatched read returns the MSB.
    read_msb: bool,
    latched_count: Option<u16>,
    latched_msb_next: bool,
    latched_status: Option<u8>,
    /// Gate input (always high for channels 0 and 1).
    gate: bool,
    /// PIT tick at which counting (re)started; `None` = not counting.
    start: Option<u64>,
    /// Counts elapsed before `start` (modes 0/4 paused by the gate).
    frozen: u64,
    /// Modes 2/3: a count written while counting is loaded at the end of the current period:
    /// (PIT tick of that reload, new count).
    pending_reload: Option<(u64, u32)>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            mode: 0,
            access: 3,
            bcd: false,
            reload: 0x10000,
            armed: false,
            null_count: false,
            write_lsb: None,
            read_msb: false,
            latched_count: None,
            latched_msb_next: false,
            latched_status: None,
            gate,
            start: None,
            frozen: 0,
            pending_reload: None,
        }
    }

    fn periodic(&self) -> bool {
        self.mode == 2 || self.mode == 3
    }

    /// Counts elapsed in the current run at tick `t`.
    fn elapsed(&self, t: u64) -> u64 {
        match self.start {
            Some(s) => self.frozen + t.saturating_sub(s),
            None => self.frozen,
        }
    }

    /// Elapsed count at which the single rising edge of a one-shot mode happens: mode 0/1 when
    /// the count reaches zero, mode 4/5 one clock later, when the one-clock low strobe ends.
    fn oneshot_edge(&self) -> u64 {
        match self.mode {
            4 | 5 => self.reload as u64 + 1,
            _ => self.reload as u64,
        }
    }

    /// Rising OUT edges with elapsed position in (0, e].
    fn edges_upto(&self, e: u64) -> u64 {
        if !self.armed {
            return 0;
        }
        if self.periodic() {
            e / self.reload as u64
        } else {
            (e >= self.oneshot_edge()) as u64
        }
    }

    /// Rising OUT edges at PIT ticks in (t0, t1].
    fn edges(&self, t0: u64, t1: u64) -> u64 {
        if t1 <= t0 {
            return 0;
        }
        if let Some((at, n)) = self.pending_reload {
            if at <= t0 {
                return (t1 - at) / n as u64 - (t0 - at) / n as u64;
            }
            if at <= t1 {
                let old = self.edges_upto(self.elapsed(at)) - self.edges_upto(self.elapsed(t0));
                return old + (t1 - at) / n as u64;
            }
        }
        self.edges_upto(self.elapsed(t1)) - self.edges_upto(self.elapsed(t0))
    }

    /// PIT tick of the first rising edge after tick `after`.
    fn next_edge(&self, after: u64) -> Option<u64> {
        if let Some((at, n)) = self.pending_reload {
            if after >= at {
                return Some(at + ((after - at) / n as u64 + 1) * n as u64);
            }
        }
        let start = self.start?;
        if !self.armed {
            return None;
        }
        let e = self.elapsed(after);
        let target = if self.periodic() {
            (e / self.reload as u64 + 1) * self.reload as u64
        } else if e < self.oneshot_edge() {
            self.oneshot_edge()
        } else {
            return None;
        };
        Some(start + target - self.frozen)
    }

    /// Apply a pending reload whose time has come.
    fn sync(&mut self, t: u64) {
        if let Some((at, n)) = self.pending_reload {
            if t >= at {
                self.pending_reload = None;
                self.reload = n;
                self.start = Some(at);
                self.frozen = 0;
            }
        }
    }

    /// Whether the counter is running (as opposed to waiting for a count, the gate or a trigger).
    fn running(&self) -> bool {
        self.armed && self.start.is_some()
    }

    /// The counting element at tick `t` (call `sync(t)` first).
    fn count(&self, t: u64) -> u16 {
        let n = self.reload as u64;
        if !self.armed {
            return n as u16;
        }
        let e = self.elapsed(t);
        let v = match self.mode {
            // Modes 1/5 before their trigger hold the count.
            1 | 5 if self.start.is_none() => n,
            // Modes 0/1/4/5 keep counting down (and wrap) after the terminal count.
            0 | 1 | 4 | 5 => (n + 0x10000 - e % 0x10000) % 0x10000,
            2 => n - e % n,
            _ => {
                // Mode 3 decrements by two. An odd count spends one clock more in the high half
                // (N, N-1, N-3, ...) than in the low half (N, N-3, ...).
                let p = e % n;
                let high = n.div_ceil(2);
                if n % 2 == 0 {
                    n - 2 * (p % (n / 2))
                } else if p < high {
                    if p == 0 {
                        n
                    } else {
                        n - 1 - 2 * (p - 1)
                    }
                } else if p == high {
                    n
                } else {
                    n - 3 - 2 * (p - high - 1)
                }
            }
        };
        v as u16
    }

    /// The OUT pin at tick `t` (call `sync(t)` first).
    fn out(&self, t: u64) -> bool {
        if !self.armed {
            // After a control word OUT is low in mode 0 and high in every other mode.
            return self.mode != 0;
        }
        let e = self.elapsed(t);
        let n = self.reload as u64;
        match self.mode {
            0 => e >= n,
            1 => self.start.is_none() || e >= n,
            2 => !self.running() || e % n != n - 1,
            3 => !self.running() || e % n < n.div_ceil(2),
            _ => !self.running() || e != n,
        }
    }

    fn status(&self, t: u64) -> u8 {
        (self.out(t) as u8) << 7
            | (self.null_count as u8) << 6
            | self.access << 4
            | self.mode << 1
            | self.bcd as u8
    }

    fn latch_count(&mut self, t: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(t));
            self.latched_msb_next = false;
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(t));
        }
    }

    fn control(&mut self, access: u8, mode: u8, bcd: bool) {
        let gate = self.gate;
        *self = Channel::new(gate);
        self.access = access;
        // Modes 6 and 7 are aliases of 2 and 3.
        self.mode = if mode > 5 { mode - 4 } else { mode };
        self.bcd = bcd;
        self.null_count = true;
    }

    /// A complete count was written at tick `t`.
    fn load(&mut self, count: u16, t: u64) {
        let n = if count == 0 { 0x10000 } else { count as u32 };
        self.null_count = false;
        if self.periodic() && self.running() {
            // Takes effect at the end of the current period.
            let e = self.elapsed(t);
            let at =
                self.start.unwrap_or(t) + (e / self.reload as u64 + 1) * self.reload as u64 - self.frozen;
            self.pending_reload = Some((at, n));
            return;
        }
        self.reload = n;
        self.armed = true;
        self.frozen = 0;
        self.pending_reload = None;
        // Modes 1 and 5 wait for a gate trigger; the others count while the gate is high.
        self.start = if self.mode == 1 || self.mode == 5 || !self.gate { None } else { Some(t) };
    }

    fn write(&mut self, value: u8, t: u64) {
        match self.access {
            1 => self.load(value as u16, t),
            2 => self.load((value as u16) << 8, t),
            _ => match self.write_lsb.take() {
                None => {
                    self.write_lsb = Some(value);
                    if self.mode == 0 {
                        // Mode 0: writing the first byte stops counting and sets OUT low.
                        self.armed = false;
                        self.start = None;
                        self.frozen = 0;
                    }
                }
                Some(lsb) => self.load(u16::from_le_bytes([lsb, value]), t),
            },
        }
    }

    fn read(&mut self, t: u64) -> u8 {
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        if let Some(c) = self.latched_count {
            let [lsb, msb] = c.to_le_bytes();
            return match self.access {
                1 => {
                    self.latched_count = None;
                    lsb
                }
                2 => {
                    self.latched_count = None;
                    msb
                }
                _ if !self.latched_msb_next => {
                    self.latched_msb_next = true;
                    lsb
                }
                _ => {
                    self.latched_count = None;
                    self.latched_msb_next = false;
                    msb
                }
            };
        }
        let [lsb, msb] = self.count(t).to_le_bytes();
        match self.access {
            1 => lsb,
            2 => msb,
            _ => {
                self.read_msb = !self.read_msb;
                if self.read_msb {
                    lsb
                } else {
                    msb
                }
            }
        }
    }

    fn set_gate(&mut self, gate: bool, t: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        if !self.armed {
            return;
        }
        match (self.mode, gate) {
            // Modes 0/4: the gate pauses and resumes counting.
            (0 | 4, false) => {
                self.frozen = self.elapsed(t);
                self.start = None;
            }
            (0 | 4, true) => self.start = Some(t),
            // Modes 2/3: gate low stops counting (OUT high); the rising edge reloads.
            (2 | 3, false) => {
                if let Some((_, n)) = self.pending_reload.take() {
                    self.reload = n;
                }
                self.start = None;
                self.frozen = 0;
            }
            // Modes 1/5 (and 2/3) restart on the rising edge.
            (_, true) => {
                self.start = Some(t);
                self.frozen = 0;
            }
            (_, false) => {}
        }
    }
}

/// The PIT and port 0x61. `Clone + PartialEq` for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pit {
    channels: [Channel; 3],
    /// Port 0x61 bits 0-3 (gate 2, speaker enable, parity/IOCHK enables).
    port61: u8,
    /// Port 0x61 bit 4, flipped on every read so loops that wait for it to toggle progress.
    refresh: bool,
    /// PIT tick up to which channel-0 edges have been counted.
    mark: u64,
    /// Channel-0 edges counted but not yet returned by `advance`.
    pending_edges: u64,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// Power-on state: no channel counts until programmed, so there is no IRQ0 before Linux
    /// sets the PIT up (there is no BIOS here to start channel 0 in mode 3).
    pub fn new() -> Self {
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port61: 0,
            refresh: false,
            mark: 0,
            pending_edges: 0,
        }
    }

    /// Count channel-0 edges up to `now` and apply due reloads; every access starts here so
    /// that a state change never loses or double-counts an edge.
    fn catch_up(&mut self, now: u64) -> u64 {
        let t = pit_ticks(now).max(self.mark);
        self.pending_edges += self.channels[0].edges(self.mark, t);
        self.mark = t;
        for c in &mut self.channels {
            c.sync(t);
        }
        t
    }

    /// A byte read from port 0x40-0x43 or 0x61 at TSC `now`.
    pub fn io_read(&mut self, port: u16, now: u64) -> u8 {
        let t = self.catch_up(now);
        match port {
            0x40..=0x42 => self.channels[(port - 0x40) as usize].read(t),
            0x61 => {
                self.refresh = !self.refresh;
                self.port61 | (self.refresh as u8) << 4 | (self.channels[2].out(t) as u8) << 5
            }
            _ => 0xff,
        }
    }

    /// A byte write to port 0x40-0x43 or 0x61 at TSC `now`.
    pub fn io_write(&mut self, port: u16, value: u8, now: u64) {
        let t = self.catch_up(now);
        match port {
            0x40..=0x42 => self.channels[(port - 0x40) as usize].write(value, t),
            0x43 => {
                let sel = value >> 6;
                if sel == 3 {
                    // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
                    for (i, c) in self.channels.iter_mut().enumerate() {
                        if value & (2 << i) == 0 {
                            continue;
                        }
                        if value & 0x20 == 0 {
                            c.latch_count(t);
                        }
                        if value & 0x10 == 0 {
                            c.latch_status(t);
                        }
                    }
                    return;
                }
                let c = &mut self.channels[sel as usize];
                let access = (value >> 4) & 3;
                if access == 0 {
                    c.latch_count(t);
                } else {
                    c.control(access, (value >> 1) & 7, value & 1 != 0);
                }
            }
            0x61 => {
                self.port61 = value & 0x0f;
                self.channels[2].set_gate(value & 1 != 0, t);
            }
            _ => {}
        }
    }

    /// Number of IRQ0 rising edges since the last call; the caller pulses IRQ0 that many times.
    pub fn advance(&mut self, now: u64) -> u32 {
        self.catch_up(now);
        let n = std::mem::take(&mut self.pending_edges);
        n.min(u32::MAX as u64) as u32
    }

    /// TSC of the next IRQ0 edge not yet returned by `advance` (a past time if some are
    /// pending already).
    pub fn next_event(&self) -> Option<u64> {
        if self.pending_edges > 0 {
            return Some(tsc_at_tick(self.mark));
        }
        self.channels[0].next_edge(self.mark).map(tsc_at_tick)
    }

    /// The OUT pin of `channel` (0-2; others read low) at `now`, for inspection and tests.
    pub fn out(&self, channel: usize, now: u64) -> bool {
        let Some(c) = self.channels.get(channel) else { return false };
        let mut c = c.clone();
        let t = pit_ticks(now).max(self.mark);
        c.sync(t);
        c.out(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's `pit_calibrate_tsc` / `quick_pit_calibrate` sequence.
    fn start_ch2_oneshot(pit: &mut Pit, count: u16, now: u64) {
        let v = pit.io_read(0x61, now);
        pit.io_write(0x61, (v & !0x02) | 0x01, now);
        pit.io_write(0x43, 0xb0, now);
        pit.io_write(0x42, count as u8, now);
        pit.io_write(0x42, (count >> 8) as u8, now);
    }

    #[test]
    fn tick_conversions_are_exact() {
        assert_eq!(pit_ticks(TSC_HZ), PIT_HZ);
        for k in [0u64, 1, 2, 1193, 1_193_181, 1_193_182, 123_456_789] {
            let t = tsc_at_tick(k);
            assert_eq!(pit_ticks(t), k);
            if t > 0 {
                assert_eq!(pit_ticks(t - 1), k - 1);
            }
        }
    }

    #[test]
    fn channel2_mode0_calibration_loop() {
        for (count, t0) in [(11_932u16, 5_000_123u64), (0xffff, 17), (1, 1_000_000), (59_659, 0)] {
            let mut pit = Pit::new();
            start_ch2_oneshot(&mut pit, count, t0);
            let done = tsc_at_tick(pit_ticks(t0) + count as u64);
            // Between count-1 and count PIT periods after the write.
            let period_ns = TSC_HZ as f64 / PIT_HZ as f64;
            let dt = (done - t0) as f64;
            assert!(dt > (count as f64 - 1.0) * period_ns && dt <= count as f64 * period_ns + 1.0);
            // Polling: OUT2 low until the count elapses, high from then on.
            let mut now = t0;
            let mut polls = 0u64;
            while pit.io_read(0x61, now) & 0x20 == 0 {
                now += 997;
                polls += 1;
            }
            assert!(now >= done && now < done + 997, "count {count}: {now} vs {done}");
            assert!(polls > 0);
            let mut p = Pit::new();
            start_ch2_oneshot(&mut p, count, t0);
            assert_eq!(p.io_read(0x61, done - 1) & 0x21, 0x01);
            assert_eq!(p.io_read(0x61, done) & 0x21, 0x21);
            // Channel 2 does not raise IRQ0.
            assert_eq!(p.advance(done + 10_000_000), 0);
        }
    }

    #[test]
    fn channel2_counts_down_and_gate_pauses() {
        let mut pit = Pit::new();
        start_ch2_oneshot(&mut pit, 1000, 0);
        let at = |k: u64| tsc_at_tick(k);
        let read = |pit: &mut Pit, now| {
            let lsb = pit.io_read(0x42, now);
            let msb = pit.io_read(0x42, now);
            u16::from_le_bytes([lsb, msb])
        };
        assert_eq!(read(&mut pit, 0), 1000);
        assert_eq!(read(&mut pit, at(250)), 750);
        // Gate low pauses a mode-0 count.
        pit.io_write(0x61, 0, at(300));
        assert_eq!(read(&mut pit, at(900)), 700);
        assert_eq!(pit.io_read(0x61, at(2000)) & 0x20, 0);
        pit.io_write(0x61, 1, at(2000));
        assert_eq!(read(&mut pit, at(2100)), 600);
        assert_eq!(pit.io_read(0x61, at(2699)) & 0x20, 0);
        assert_ne!(pit.io_read(0x61, at(2700)) & 0x20, 0);
        // After the terminal count the counter wraps and keeps counting.
        assert_eq!(read(&mut pit, at(2705)), 0xfffb);
    }

    #[test]
    fn port61_refresh_toggles_and_keeps_bits() {
        let mut pit = Pit::new();
        pit.io_write(0x61, 0xff, 0);
        let a = pit.io_read(0x61, 0);
        let b = pit.io_read(0x61, 0);
        assert_eq!((a ^ b) & 0x10, 0x10);
        assert_eq!(a & 0x0f, 0x0f);
        assert_eq!(a & 0xc0, 0);
    }

    #[test]
    fn channel0_mode2_periodic_edges_are_exact() {
        let mut pit = Pit::new();
        let latch: u16 = 1193; // (1193182 + HZ/2) / HZ at HZ=1000
        let t0 = 12_345;
        pit.io_write(0x43, 0x34, t0);
        pit.io_write(0x40, latch as u8, t0);
        pit.io_write(0x40, (latch >> 8) as u8, t0);
        let l = pit_ticks(t0);
        assert_eq!(pit.advance(t0), 0);
        assert_eq!(pit.next_event(), Some(tsc_at_tick(l + 1193)));
        // Irregular advance steps over ten virtual seconds, and skip-to-next-event steps.
        let mut now = t0;
        let mut total = 0u64;
        let end = t0 + 10 * TSC_HZ;
        let mut step = 1u64;
        while now < end {
            step = (step * 7919 + 13) % 3_000_000 + 1;
            now = (now + step).min(end);
            total += pit.advance(now) as u64;
        }
        assert_eq!(total, (pit_ticks(end) - l) / 1193);
        let mut skips = 0;
        while skips < 1000 {
            let next = pit.next_event().unwrap();
            assert!(next > now);
            assert_eq!(pit.advance(next - 1), 0);
            assert_eq!(pit.advance(next), 1);
            assert_eq!((pit_ticks(next) - l) % 1193, 0);
            now = next;
            skips += 1;
        }
        // Rate generator count: N, N-1, ..., 1.
        let k = pit_ticks(now);
        let read = |pit: &mut Pit, now| {
            let lsb = pit.io_read(0x40, now);
            u16::from_le_bytes([lsb, pit.io_read(0x40, now)])
        };
        assert_eq!(read(&mut pit, tsc_at_tick(k)), 1193);
        assert_eq!(read(&mut pit, tsc_at_tick(k + 1)), 1192);
        assert_eq!(read(&mut pit, tsc_at_tick(k + 1192)), 1);
        assert!(!pit.out(0, tsc_at_tick(k + 1192)));
        assert!(pit.out(0, tsc_at_tick(k + 1193)));
    }

    #[test]
    fn channel0_mode4_oneshot_and_shutdown() {
        let mut pit = Pit::new();
        // pit_set_oneshot, then pit_next_event(delta = 500).
        pit.io_write(0x43, 0x38, 0);
        assert_eq!(pit.next_event(), None);
        let t0 = 1_000_000;
        pit.io_write(0x40, 0xf4, t0);
        pit.io_write(0x40, 0x01, t0);
        let edge = tsc_at_tick(pit_ticks(t0) + 501);
        assert_eq!(pit.next_event(), Some(edge));
        assert!(!pit.out(0, tsc_at_tick(pit_ticks(t0) + 500)), "strobe low at terminal count");
        assert_eq!(pit.advance(edge - 1), 0);
        assert_eq!(pit.advance(edge), 1);
        assert_eq!(pit.next_event(), None);
        assert_eq!(pit.advance(edge + 100_000_000), 0, "one shot only");
        // Shutdown: mode 0 control word, no count yet: OUT low, no edges.
        pit.io_write(0x43, 0x30, edge + 100_000_000);
        assert_eq!(pit.next_event(), None);
        assert!(!pit.out(0, edge + 200_000_000));
    }

    #[test]
    fn mode4_reprogram_before_expiry_replaces_the_edge() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x38, 0);
        pit.io_write(0x40, 0xe8, 0);
        pit.io_write(0x40, 0x03, 0); // 1000
        let t1 = tsc_at_tick(400);
        pit.io_write(0x40, 100, t1);
        pit.io_write(0x40, 0, t1);
        assert_eq!(pit.next_event(), Some(tsc_at_tick(501)));
        assert_eq!(pit.advance(tsc_at_tick(5000)), 1);
    }

    #[test]
    fn channel0_mode0_edge_once_and_state_change_keeps_edges() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x30, 0);
        pit.io_write(0x40, 100, 0);
        pit.io_write(0x40, 0, 0);
        let edge = tsc_at_tick(100);
        // Reprogramming after the edge but before `advance` keeps the edge.
        pit.io_write(0x43, 0x34, edge + 5);
        pit.io_write(0x40, 0, edge + 5);
        pit.io_write(0x40, 0, edge + 5);
        assert!(pit.next_event().unwrap() <= edge + 5);
        assert_eq!(pit.advance(edge + 5), 1);
        let l = pit_ticks(edge + 5);
        assert_eq!(pit.next_event(), Some(tsc_at_tick(l + 65536)));
    }

    #[test]
    fn mode2_new_count_applies_at_period_end() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x34, 0);
        pit.io_write(0x40, 100, 0);
        pit.io_write(0x40, 0, 0);
        pit.io_write(0x40, 50, tsc_at_tick(130));
        // The edge at 100 is counted but not yet taken: due now.
        assert_eq!(pit.next_event(), Some(tsc_at_tick(130)));
        pit.io_write(0x40, 0, tsc_at_tick(130));
        assert_eq!(pit.advance(tsc_at_tick(130)), 1);
        assert_eq!(pit.next_event(), Some(tsc_at_tick(200)));
        assert_eq!(pit.advance(tsc_at_tick(199)), 0);
        assert_eq!(pit.advance(tsc_at_tick(350)), 4, "edges at 200, 250, 300, 350");
        assert_eq!(pit.next_event(), Some(tsc_at_tick(400)));
    }

    #[test]
    fn mode3_square_wave() {
        let mut pit = Pit::new();
        pit.io_write(0x43, 0x36, 0);
        pit.io_write(0x40, 10, 0);
        pit.io_write(0x40, 0, 0);
        let outs: Vec<bool> = (0..20).map(|k| pit.out(0, tsc_at_tick(k))).collect();
        assert_eq!(&outs[..10], &[true, true, true, true, true, false, false, false, false, false]);
        assert_eq!(outs[..10], outs[10..]);
        assert_eq!(pit.advance(tsc_at_tick(1000)), 100);
        // Odd count: high one clock longer.
        pit.io_write(0x43, 0x36, tsc_at_tick(1000));
        pit.io_write(0x40, 5, tsc_at_tick(1000));
        pit.io_write(0x40, 0, tsc_at_tick(1000));
        let outs: Vec<bool> = (1000..1005).map(|k| pit.out(0, tsc_at_tick(k))).collect();
        assert_eq!(outs, [true, true, true, false, false]);
    }

    #[test]
    fn latch_and_read_back() {
        let mut pit = Pit::new();
        start_ch2_oneshot(&mut pit, 0x1234, 0);
        // Counter latch: the value is frozen until both bytes are read.
        pit.io_write(0x43, 0x80, tsc_at_tick(0x34));
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x100)), 0x00);
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x200)), 0x12);
        // A second latch while latched is ignored.
        pit.io_write(0x43, 0x80, tsc_at_tick(0x300));
        pit.io_write(0x43, 0x80, tsc_at_tick(0x400));
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x500)), 0x34);
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x500)), 0x0f);
        // Read-back of status and count for channel 2: status first.
        pit.io_write(0x43, 0xc8, tsc_at_tick(0x1000));
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x1100)), 0x30, "OUT low, LSB/MSB, mode 0, binary");
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x1100)), 0x34);
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x1100)), 0x02);
        // Status only, after the terminal count: OUT high.
        pit.io_write(0x43, 0xe8, tsc_at_tick(0x1234));
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x1234)), 0xb0);
        // Null count right after a control word.
        pit.io_write(0x43, 0xb4, tsc_at_tick(0x2000));
        pit.io_write(0x43, 0xe8, tsc_at_tick(0x2000));
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x2000)), 0x40 | 0x80 | 0x34);
        // LSB-only access mode.
        pit.io_write(0x43, 0x90, tsc_at_tick(0x3000));
        pit.io_write(0x42, 0x80, tsc_at_tick(0x3000));
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x3010)), 0x70);
        assert_eq!(pit.io_read(0x42, tsc_at_tick(0x3020)), 0x60);
    }
}
