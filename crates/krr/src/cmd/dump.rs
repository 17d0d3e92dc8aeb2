//! `krr dump`: print a trace's events, console lines and statistics.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use krr_trace::{to_hex, Event, EventKind, Header, TraceError, TraceEvent, TraceReader};

/// Print the events of a trace, one line each, with the guest's console output interleaved at
/// the point it was written.
///
/// Each line is `#INDEX cpuN KIND fields...`; console lines follow the event that completed them,
/// prefixed with `|`. A damaged trace prints every intact event, then one line naming where the
/// damage starts, and exits 1.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Trace directory (written by `krr record`).
    trace: PathBuf,
    /// Events to show: `N`, `N-M` (inclusive), `N-`, `-M` or `end` (the last event). Default: all.
    range: Option<String>,
    /// Count events and encoded bytes per kind instead of listing events.
    #[arg(long)]
    stats: bool,
    /// Emit JSON: one object per line for events and console lines; one object for --stats.
    #[arg(long)]
    json: bool,
    /// Print the trace header (VM, kernel, CPUID, completion) and exit.
    #[arg(long, conflicts_with = "stats")]
    header: bool,
}

/// An inclusive event range; `None` bounds are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    first: u64,
    last: Option<u64>,
}

impl Range {
    fn contains(&self, i: u64) -> bool {
        i >= self.first && self.last.is_none_or(|l| i <= l)
    }
}

fn parse_range(s: &str, count: u64) -> anyhow::Result<Range> {
    let num = |t: &str| -> anyhow::Result<u64> {
        t.parse::<u64>().with_context(|| format!("bad event range {s:?}: {t:?} is not an event index"))
    };
    if s == "end" {
        return Ok(Range { first: count.saturating_sub(1), last: Some(count.saturating_sub(1)) });
    }
    let r = match s.split_once('-') {
        None => {
            let n = num(s)?;
            Range { first: n, last: Some(n) }
        }
        Some((a, b)) => Range {
            first: if a.is_empty() { 0 } else { num(a)? },
            last: match b {
                "" | "end" => None,
                b => Some(num(b)?),
            },
        },
    };
    if let Some(l) = r.last {
        if l < r.first {
            bail!("bad event range {s:?}: the end comes before the start");
        }
    }
    Ok(r)
}

pub fn run(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let mut reader = TraceReader::open(&args.trace)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.header {
        print_header(&mut out, reader.header(), args.json)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let count = reader.stream().event_count();
    let range = match &args.range {
        Some(s) => parse_range(s, count)?,
        None => Range { first: 0, last: None },
    };
    let console = reader.console()?;
    let complete = reader.is_complete();
    let header = reader.header().clone();
    let mut damage: Option<TraceError> = None;
    let mut stats = Stats::default();
    let mut con = ConsoleCursor { bytes: &console, offset: 0, pending_from: 0 };
    if !args.stats && !args.json && args.range.is_none() {
        print_header_summary(&mut out, &header)?;
    }
    // Console lines are positioned by every marker before the range too, so iterate from 0.
    for item in reader.events() {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                damage = Some(e);
                break;
            }
        };
        if range.last.is_some_and(|l| ev.index > l) {
            break;
        }
        let lines = match ev.event {
            Event::Console { len, .. } => con.advance(len as usize),
            _ => Vec::new(),
        };
        if !range.contains(ev.index) {
            continue;
        }
        if args.stats {
            stats.add(&ev);
        } else if args.json {
            print_event_json(&mut out, &ev)?;
            for line in lines {
                writeln!(out, "{}", serde_json::json!({ "console": line, "after_event": ev.index }))?;
            }
        } else {
            writeln!(out, "#{} cpu{} {} {}", ev.index, ev.event.vcpu(), ev.event.kind(), summary(&ev.event))?;
            for line in lines {
                writeln!(out, "  | {line}")?;
            }
        }
    }
    if !args.stats && range.last.is_none() && damage.is_none() {
        if let Some(rest) = con.rest() {
            if args.json {
                writeln!(out, "{}", serde_json::json!({ "console": rest, "after_event": null }))?;
            } else {
                writeln!(out, "  | {rest}")?;
            }
        }
    }
    if args.stats {
        stats.print(&mut out, args.json, complete, reader.stream().blocks().len(), console.len() as u64)?;
    }
    out.flush()?;
    drop(out);
    if let Some(e) = damage {
        return Err(e.into());
    }
    if !complete {
        eprintln!(
            "krr dump: note: {} is incomplete (the recorder did not finish it); shown up to its last written block",
            args.trace.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits the console bytes into lines as markers consume them.
struct ConsoleCursor<'a> {
    bytes: &'a [u8],
    offset: usize,
    pending_from: usize,
}

impl ConsoleCursor<'_> {
    /// Consume `len` bytes; returns the lines they completed.
    fn advance(&mut self, len: usize) -> Vec<String> {
        self.offset = (self.offset + len).min(self.bytes.len());
        let mut lines = Vec::new();
        while let Some(nl) = self.bytes[self.pending_from..self.offset].iter().position(|b| *b == b'\n') {
            let end = self.pending_from + nl;
            lines.push(clean_line(&self.bytes[self.pending_from..end]));
            self.pending_from = end + 1;
        }
        lines
    }

    /// A final line without a newline, if any.
    fn rest(&self) -> Option<String> {
        (self.pending_from < self.offset).then(|| clean_line(&self.bytes[self.pending_from..self.offset]))
    }
}

fn clean_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\r').to_string()
}

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

fn exception_name(v: u8) -> &'static str {
    const NAMES: [&str; 21] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS", "#GP",
        "#PF", "-", "#MF", "#AC", "#MC", "#XM", "#VE",
    ];
    NAMES.get(v as usize).copied().unwrap_or("?")
}

fn data_summary(data: &[u8]) -> String {
    const SHOW: usize = 16;
    let more = if data.len() > SHOW { "…" } else { "" };
    format!("len={} data={}{more}", data.len(), to_hex(&data[..data.len().min(SHOW)]))
}

/// One line of fields for an event.
fn summary(e: &Event) -> String {
    match e {
        Event::Start { pos, .. } => format!("pos={pos}"),
        Event::Syscall { regs, .. } => {
            let g = &regs.gpr;
            format!(
                "nr={} rdi={:#x} rsi={:#x} rdx={:#x} r10={:#x} r8={:#x} r9={:#x} rip={:#x}",
                g[0], g[7], g[6], g[2], g[10], g[8], g[9], regs.rip
            )
        }
        Event::Exception { vector, error_code, cr2, regs, .. } => format!(
            "vector={vector} ({}) error={error_code:#x} cr2={cr2:#x} rip={:#x}",
            exception_name(*vector),
            regs.rip
        ),
        Event::Interrupt { vector, pos, regs, .. } => {
            format!("vector={vector:#x} pos={pos} rip={:#x} rsp={:#x}", regs.rip, regs.gpr[4])
        }
        Event::UserRead { read, addr, data, .. } => {
            format!("{} addr={addr:#x} {}", read.name(), data_summary(data))
        }
        Event::PteRead { addr, value, .. } => format!("addr={addr:#x} value={value:#x}"),
        Event::PortRead { port, size, value, .. } => format!("port={port:#x} size={size} value={value:#x}"),
        Event::MmioRead { addr, size, value, .. } => format!("addr={addr:#x} size={size} value={value:#x}"),
        Event::Rdtsc { tsc, aux: None, .. } => format!("tsc={tsc}"),
        Event::Rdtsc { tsc, aux: Some(aux), .. } => format!("tsc={tsc} aux={aux}"),
        Event::Random { source, value, ok, .. } => {
            format!("{source:?} value={value:#x} {}", if *ok { "ok" } else { "failed" }).to_lowercase()
        }
        Event::Rdmsr { msr, value, fault: false, .. } => format!("msr={msr:#x} value={value:#x}"),
        Event::Rdmsr { msr, fault: true, .. } => format!("msr={msr:#x} #GP"),
        Event::Cpuid { leaf, subleaf, eax, ebx, ecx, edx, .. } => {
            format!("leaf={leaf:#x} subleaf={subleaf:#x} eax={eax:#x} ebx={ebx:#x} ecx={ecx:#x} edx={edx:#x}")
        }
        Event::Dma { gpa, data, .. } => format!("gpa={gpa:#x} {}", data_summary(data)),
        Event::LockHandoff { pos, .. } | Event::LockResync { pos, .. } => format!("pos={pos}"),
        Event::Console { len, .. } => format!("len={len}"),
        Event::End { reason, .. } => format!("reason={reason}"),
    }
}

fn print_event_json(out: &mut impl Write, ev: &TraceEvent) -> anyhow::Result<()> {
    // `index` first, then the event's own fields in declaration order.
    let mut obj = serde_json::Map::new();
    obj.insert("index".into(), ev.index.into());
    if let serde_json::Value::Object(fields) = serde_json::to_value(&ev.event)? {
        for (k, v) in fields {
            let v = if k == "regs" { regs_json(&v) } else { v };
            obj.insert(k, v);
        }
    }
    writeln!(out, "{}", serde_json::Value::Object(obj))?;
    Ok(())
}

/// Registers by name instead of a positional GPR array.
fn regs_json(regs: &serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(g) = regs.get("gpr").and_then(|g| g.as_array()) {
        for (name, val) in GPR_NAMES.iter().zip(g) {
            m.insert((*name).into(), val.clone());
        }
    }
    for k in ["rip", "rflags"] {
        if let Some(v) = regs.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    serde_json::Value::Object(m)
}

/// `1970-01-01 00:00:00 UTC` style, from milliseconds since the epoch.
fn format_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn print_header_summary(out: &mut impl Write, h: &Header) -> anyhow::Result<()> {
    writeln!(out, "# producer: {}, trace format {}", h.producer, krr_trace::FORMAT_VERSION)?;
    writeln!(
        out,
        "# vm: accel={} cpu={} vcpus={} mem={} MiB cmdline={:?}",
        h.vm.accel,
        h.vm.cpu_vendor,
        h.vm.vcpus,
        h.vm.mem_bytes >> 20,
        h.vm.cmdline
    )?;
    if h.kernel.build_id.is_empty() {
        writeln!(out, "# kernel: unknown (the trace does not name one)")?;
    } else {
        writeln!(
            out,
            "# kernel: {} build-id={} {}",
            h.kernel.version, h.kernel.build_id, h.kernel.content_hash
        )?;
    }
    writeln!(out, "# started: {}", format_time(h.start_time_unix_ms))?;
    match &h.completion {
        Some(c) => writeln!(
            out,
            "# ended: {} reason={} events={} blocks={} event_bytes={} console_bytes={}",
            format_time(c.end_time_unix_ms),
            c.end_reason,
            c.events,
            c.blocks,
            c.event_bytes,
            c.console_bytes
        )?,
        None => writeln!(out, "# ended: never (incomplete trace)")?,
    }
    Ok(())
}

fn print_header(out: &mut impl Write, h: &Header, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(h)?)?;
        return Ok(());
    }
    print_header_summary(out, h)?;
    match &h.snapshot {
        Some(s) => writeln!(out, "# snapshot: {} ({} bytes, crc32 {:08x})", s.file, s.bytes, s.crc32)?,
        None => writeln!(out, "# snapshot: none")?,
    }
    for t in &h.cpuid {
        writeln!(out, "# cpuid vcpu{}: {} leaves", t.vcpu, t.entries.len())?;
        for e in &t.entries {
            writeln!(
                out,
                "#   {:08x}.{:02x}: eax={:08x} ebx={:08x} ecx={:08x} edx={:08x}",
                e.leaf, e.subleaf, e.eax, e.ebx, e.ecx, e.edx
            )?;
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Stats {
    per_kind: BTreeMap<EventKind, (u64, u64)>,
    per_vcpu: BTreeMap<u32, u64>,
    events: u64,
    encoded: u64,
}

impl Stats {
    fn add(&mut self, ev: &TraceEvent) {
        let e = self.per_kind.entry(ev.event.kind()).or_default();
        e.0 += 1;
        e.1 += ev.encoded_len as u64;
        *self.per_vcpu.entry(ev.event.vcpu()).or_default() += 1;
        self.events += 1;
        self.encoded += ev.encoded_len as u64;
    }

    fn print(
        &self,
        out: &mut impl Write,
        json: bool,
        complete: bool,
        blocks: usize,
        console_bytes: u64,
    ) -> anyhow::Result<()> {
        if json {
            let kinds: serde_json::Map<String, serde_json::Value> = self
                .per_kind
                .iter()
                .map(|(k, (n, b))| {
                    (k.name().to_string(), serde_json::json!({ "events": n, "encoded_bytes": b }))
                })
                .collect();
            let vcpus: serde_json::Map<String, serde_json::Value> =
                self.per_vcpu.iter().map(|(v, n)| (v.to_string(), (*n).into())).collect();
            let v = serde_json::json!({
                "events": self.events,
                "encoded_bytes": self.encoded,
                "blocks": blocks,
                "console_bytes": console_bytes,
                "complete": complete,
                "kinds": kinds,
                "vcpus": vcpus,
            });
            writeln!(out, "{v}")?;
            return Ok(());
        }
        writeln!(out, "{:<14} {:>12} {:>14} {:>10}", "kind", "events", "encoded_bytes", "bytes/ev")?;
        for (k, (n, b)) in &self.per_kind {
            writeln!(out, "{:<14} {:>12} {:>14} {:>10.2}", k.name(), n, b, *b as f64 / *n as f64)?;
        }
        let avg = if self.events == 0 { 0.0 } else { self.encoded as f64 / self.events as f64 };
        writeln!(out, "{:<14} {:>12} {:>14} {:>10.2}", "total", self.events, self.encoded, avg)?;
        let vcpus: Vec<String> = self.per_vcpu.iter().map(|(v, n)| format!("cpu{v}={n}")).collect();
        writeln!(out, "vcpus: {}", vcpus.join(" "))?;
        writeln!(
            out,
            "blocks: {blocks}  console_bytes: {console_bytes}  complete: {}",
            if complete { "yes" } else { "no" }
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("5", 10).unwrap(), Range { first: 5, last: Some(5) });
        assert_eq!(parse_range("2-4", 10).unwrap(), Range { first: 2, last: Some(4) });
        assert_eq!(parse_range("3-", 10).unwrap(), Range { first: 3, last: None });
        assert_eq!(parse_range("3-end", 10).unwrap(), Range { first: 3, last: None });
        assert_eq!(parse_range("-4", 10).unwrap(), Range { first: 0, last: Some(4) });
        assert_eq!(parse_range("end", 10).unwrap(), Range { first: 9, last: Some(9) });
        assert!(parse_range("4-2", 10).is_err());
        assert!(parse_range("x", 10).is_err());
        assert!(parse_range("1-y", 10).is_err());
    }

    #[test]
    fn console_lines_complete_at_their_marker() {
        let bytes = b"ab\ncd\r\nef";
        let mut c = ConsoleCursor { bytes, offset: 0, pending_from: 0 };
        assert_eq!(c.advance(2), Vec::<String>::new());
        assert_eq!(c.advance(5), vec!["ab".to_string(), "cd".to_string()]);
        assert_eq!(c.rest(), None);
        // A marker past the end of a short console file (killed recorder) is clamped.
        assert_eq!(c.advance(100), Vec::<String>::new());
        assert_eq!(c.rest().as_deref(), Some("ef"));
    }

    #[test]
    fn time_format() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
