//! The guest console: everything the guest writes to COM1, echoed to the terminal if asked, kept
//! for the trace, and watched for the lines the VMM acts on (a kernel panic, `Run /init`).

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A line the VMM reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// `Kernel panic - not syncing: ...`; holds the whole line from "Kernel panic".
    Panic(String),
    /// The kernel is starting init (`Run /init as init process`).
    RunInit,
}

/// What of the guest's output to copy to this process's stdout as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Echo {
    #[default]
    Nothing,
    Everything,
    /// Only what follows the kernel's `Run /init` line (the workload's output and later kernel
    /// messages such as a panic), not the boot log.
    AfterInit,
}

#[derive(Debug, Default)]
struct Inner {
    bytes: Vec<u8>,
    line_start: usize,
    events: Vec<ConsoleEvent>,
    echo: Echo,
    init_seen: bool,
    /// When the `Run /init` line arrived (benchmarks time the workload from here).
    init_at: Option<std::time::Instant>,
    line_ends: LineEnds,
}

/// The serial console ends lines with `\r\n` (the tty's ONLCR); stdout gets plain `\n`, as
/// pipes and scripts expect (a terminal shows both the same). A `\r` not followed by `\n`
/// (a progress line redrawn in place) is kept. The trace keeps the bytes as the guest wrote them.
#[derive(Debug, Default)]
struct LineEnds {
    /// A `\r` seen last, held until the next byte says whether it ends a line.
    held_cr: bool,
}

impl LineEnds {
    fn feed(&mut self, b: u8, out: &mut impl Write) {
        if std::mem::take(&mut self.held_cr) && b != b'\n' {
            let _ = out.write_all(b"\r");
        }
        if b == b'\r' {
            self.held_cr = true;
        } else {
            let _ = out.write_all(&[b]);
        }
    }
}

/// Shared console state (cloned into the UART and read by the VMM).
#[derive(Debug, Clone, Default)]
pub struct Console(Arc<Mutex<Inner>>);

impl Console {
    /// A console that copies the guest's output to stdout as `echo` says.
    pub fn new(echo: Echo) -> Self {
        Console(Arc::new(Mutex::new(Inner { echo, ..Inner::default() })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain bytes behind; they are still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append guest output.
    pub fn push(&self, buf: &[u8]) {
        let mut c = self.lock();
        let mut out = std::io::stdout().lock();
        for &b in buf {
            c.bytes.push(b);
            if c.echo == Echo::Everything || (c.echo == Echo::AfterInit && c.init_seen) {
                c.line_ends.feed(b, &mut out);
            }
            if b == b'\n' {
                let start = c.line_start;
                let line = String::from_utf8_lossy(&c.bytes[start..]).into_owned();
                c.line_start = c.bytes.len();
                if let Some(i) = line.find("Kernel panic - not syncing") {
                    c.events.push(ConsoleEvent::Panic(line[i..].trim_end().to_string()));
                } else if line.contains("Run /init as init process") {
                    c.events.push(ConsoleEvent::RunInit);
                    c.init_seen = true;
                    c.init_at.get_or_insert_with(std::time::Instant::now);
                }
            }
        }
        if c.echo != Echo::Nothing {
            let _ = out.flush();
        }
    }

    /// The guest is already past `Run /init` (a VM resumed from a snapshot taken at init).
    pub fn set_init_seen(&self) {
        self.lock().init_seen = true;
    }

    /// When the kernel's `Run /init` line arrived.
    pub fn init_time(&self) -> Option<std::time::Instant> {
        self.lock().init_at
    }

    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// The bytes written from offset `start` on.
    pub fn bytes_from(&self, start: usize) -> Vec<u8> {
        self.lock().bytes.get(start..).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Whether the console shows `text` (without copying it out).
    pub fn contains(&self, text: &str) -> bool {
        let t = text.as_bytes();
        !t.is_empty() && self.lock().bytes.windows(t.len()).any(|w| w == t)
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events seen so far.
    pub fn events(&self) -> Vec<ConsoleEvent> {
        self.lock().events.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_gets_plain_newlines_and_lone_carriage_returns_stay() {
        let mut ends = LineEnds::default();
        let mut out = Vec::new();
        // Split across pushes the way the UART delivers bytes: the held \r waits for the next one.
        for &b in b"a\r\nb\r" {
            ends.feed(b, &mut out);
        }
        assert_eq!(out, b"a\nb");
        for &b in b"\nprogress 1\rprogress 2\r\r\n" {
            ends.feed(b, &mut out);
        }
        assert_eq!(out, b"a\nb\nprogress 1\rprogress 2\r\n");
    }

    #[test]
    fn watches_lines() {
        let c = Console::new(Echo::Nothing);
        c.push(b"[    1.0] Run /init as init process\n[    2.0] Kernel pa");
        c.push(b"nic - not syncing: sysrq triggered crash\r\n");
        assert_eq!(
            c.events(),
            vec![
                ConsoleEvent::RunInit,
                ConsoleEvent::Panic("Kernel panic - not syncing: sysrq triggered crash".into())
            ]
        );
        assert!(c.contains("Run /init") && c.contains("sysrq triggered"));
        assert!(!c.contains("Run /sbin/init") && !c.contains(""));
    }
}
