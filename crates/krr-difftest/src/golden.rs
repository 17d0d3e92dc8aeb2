//! Golden results: a CPU's outcomes for the corpus, stored so that krr-emu can be checked against
//! a vendor whose silicon is not on this machine.
//!
//! `krr-difftest --write-golden FILE` runs the corpus on the host CPU (KVM) and stores every
//! outcome; `krr-difftest --golden FILE` compares krr-emu (in the file's vendor profile) with the
//! stored outcomes, without KVM. The repository keeps one file per vendor (`golden/`), each
//! written on a host of that vendor (the Intel file was first seeded from a difftest report,
//! see [`seed_from_report`]).
//!
//! Format: zstd-compressed text. A first line `#krr-difftest-golden 1 vendor=NAME seed=N
//! count=N cpu=TEXT`, then one line per case, tab-separated:
//! `name  k  case  end  rip  rflags  gprs  xmm  mxcsr  x87  mem` — `case` a digest of the case
//! (initial state and code: a corpus that changed is told apart), then the outcome after the first `k`
//! instructions (k is the whole case unless seeded from a report that named an earlier one),
//! stored as a difference from the case's initial state: `gprs`/`xmm` list `index=hex` of the
//! registers that changed, `mem` lists `offset=hexbytes` runs of the window that changed, `-`
//! for none; `end` is `done` or `exc,VECTOR,ERRORCODE|-,CR2|-`; `x87` is `fcw,fsw,ftw` then
//! `;i=hex` for each ST(i) that is not zero. A case the reference could not run is
//! `name  k  case  !reason` (not comparable).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::case::{Case, End, Outcome, X87};
use crate::layout::DATA_SIZE;
use krr_emu::Vendor;

/// File format version (the number after the magic).
pub const GOLDEN_VERSION: u32 = 1;
const MAGIC: &str = "#krr-difftest-golden";

/// Errors reading or writing golden files.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: line {line}: {msg}")]
    Parse { path: String, line: usize, msg: String },
    #[error("{path}: not a krr-difftest golden file (version {GOLDEN_VERSION}): {msg}")]
    Header { path: String, msg: String },
}

/// One stored result, with the digest of the case it was made from ([`case_digest`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The outcome after `k` instructions, as a difference from the case's initial state.
    Outcome { k: usize, case: u64, fields: Vec<String> },
    /// The reference could not run the case (reason).
    Unavailable { k: usize, case: u64, reason: String },
}

/// FNV-1a over the case's initial state and code: golden results only describe the case they
/// were made from.
pub fn case_digest(c: &Case) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |b: &[u8]| {
        for x in b {
            h = (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for g in c.gprs {
        eat(&g.to_le_bytes());
    }
    eat(&c.rflags.to_le_bytes());
    for x in c.xmm {
        eat(&x.to_le_bytes());
    }
    eat(&c.mxcsr.to_le_bytes());
    eat(&c.mem);
    for i in &c.insns {
        eat(&[i.len() as u8]);
        eat(i);
    }
    h
}

/// What a golden set holds for one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The outcome after `k` instructions, or why the reference had none.
    Found(usize, Box<Result<Outcome, String>>),
    /// No entry for the case's name.
    Missing,
    /// The entry was made from another case of that name (the corpus changed since).
    OtherCase,
}

/// A set of golden results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Golden {
    pub vendor: Vendor,
    pub seed: u64,
    pub count: u64,
    /// What produced it (the CPU model, or the report it was seeded from).
    pub cpu: String,
    pub entries: HashMap<String, Stored>,
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    // `get`: a pair that is not two ASCII characters is not hex (and may not be a char boundary).
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn hex64(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

fn list_or_dash(items: Vec<String>, sep: &str) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(sep)
    }
}

/// The stored fields of `o` (the outcome of `case`).
pub fn encode_outcome(case: &Case, o: &Outcome) -> Vec<String> {
    let end = match &o.end {
        End::Done => "done".to_string(),
        End::Exception { vector, error_code, cr2 } => format!(
            "exc,{vector},{},{}",
            error_code.map_or("-".into(), |e| format!("{e:x}")),
            cr2.map_or("-".into(), |a| format!("{a:x}"))
        ),
    };
    let gprs = (0..16)
        .filter(|&i| o.gprs[i] != case.gprs[i])
        .map(|i| format!("{i}={:x}", o.gprs[i]))
        .collect::<Vec<_>>();
    let xmm = (0..16)
        .filter(|&i| o.xmm[i] != case.xmm[i])
        .map(|i| format!("{i}={:x}", o.xmm[i]))
        .collect::<Vec<_>>();
    let mut x87 = format!("{:x},{:x},{:x}", o.x87.fcw, o.x87.fsw, o.x87.ftw);
    for (i, st) in o.x87.st.iter().enumerate() {
        if st.iter().any(|&b| b != 0) {
            let _ = write!(x87, ";{i}={}", hex_bytes(st));
        }
    }
    let mut runs = Vec::new();
    let mut i = 0;
    while i < o.mem.len() {
        if case.mem.get(i) == Some(&o.mem[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < o.mem.len() && case.mem.get(i) != Some(&o.mem[i]) {
            i += 1;
        }
        runs.push(format!("{start:x}={}", hex_bytes(&o.mem[start..i])));
    }
    vec![
        end,
        format!("{:x}", o.rip),
        format!("{:x}", o.rflags),
        list_or_dash(gprs, ","),
        list_or_dash(xmm, ","),
        format!("{:x}", o.mxcsr),
        x87,
        list_or_dash(runs, ";"),
    ]
}

/// Rebuilds the outcome `fields` describe for `case`; None if they are malformed.
pub fn decode_outcome(case: &Case, fields: &[String]) -> Option<Outcome> {
    if fields.len() != 8 {
        return None;
    }
    let end = if fields[0] == "done" {
        End::Done
    } else {
        let p: Vec<&str> = fields[0].split(',').collect();
        if p.len() != 4 || p[0] != "exc" {
            return None;
        }
        let opt = |s: &str| if s == "-" { Some(None) } else { hex64(s).map(Some) };
        End::Exception { vector: p[1].parse().ok()?, error_code: opt(p[2])?, cr2: opt(p[3])? }
    };
    let mut gprs = case.gprs;
    let mut xmm = case.xmm;
    if fields[3] != "-" {
        for kv in fields[3].split(',') {
            let (i, v) = kv.split_once('=')?;
            *gprs.get_mut(i.parse::<usize>().ok()?)? = hex64(v)?;
        }
    }
    if fields[4] != "-" {
        for kv in fields[4].split(',') {
            let (i, v) = kv.split_once('=')?;
            *xmm.get_mut(i.parse::<usize>().ok()?)? = u128::from_str_radix(v, 16).ok()?;
        }
    }
    let mut x = fields[6].split(';');
    let w: Vec<&str> = x.next()?.split(',').collect();
    if w.len() != 3 {
        return None;
    }
    let mut x87 = X87 {
        fcw: u16::from_str_radix(w[0], 16).ok()?,
        fsw: u16::from_str_radix(w[1], 16).ok()?,
        ftw: u8::from_str_radix(w[2], 16).ok()?,
        st: [[0; 10]; 8],
    };
    for kv in x {
        let (i, v) = kv.split_once('=')?;
        let b = parse_hex_bytes(v)?;
        x87.st.get_mut(i.parse::<usize>().ok()?)?.copy_from_slice(b.get(..10)?);
    }
    let mut mem = case.mem.clone();
    mem.resize(DATA_SIZE, 0);
    if fields[7] != "-" {
        for run in fields[7].split(';') {
            let (off, v) = run.split_once('=')?;
            let off = usize::from_str_radix(off, 16).ok()?;
            let b = parse_hex_bytes(v)?;
            mem.get_mut(off..off.checked_add(b.len())?)?.copy_from_slice(&b);
        }
    }
    Some(Outcome {
        end,
        gprs,
        rip: hex64(&fields[1])?,
        rflags: hex64(&fields[2])?,
        xmm,
        mxcsr: u32::from_str_radix(&fields[5], 16).ok()?,
        x87,
        mem,
    })
}

impl Golden {
    pub fn new(vendor: Vendor, seed: u64, count: u64, cpu: &str) -> Golden {
        Golden { vendor, seed, count, cpu: cpu.replace(['\n', '\r', '\t'], " "), entries: HashMap::new() }
    }

    /// Stores the outcome of `case` after its first `k` instructions.
    pub fn put(&mut self, case: &Case, k: usize, o: &Outcome) {
        let stored = Stored::Outcome { k, case: case_digest(case), fields: encode_outcome(case, o) };
        self.entries.insert(case.name.clone(), stored);
    }

    /// Stores that the reference could not run `case`.
    pub fn put_unavailable(&mut self, case: &Case, reason: &str) {
        let reason = reason.replace(['\n', '\r', '\t'], " ");
        let stored = Stored::Unavailable { k: case.insns.len(), case: case_digest(case), reason };
        self.entries.insert(case.name.clone(), stored);
    }

    /// The stored result for `case`: the prefix length and the outcome (or why there is none).
    /// A case that is not the one the results were made from is an error of its own
    /// ([`Lookup::OtherCase`]): comparing with it would report nonsense.
    pub fn get(&self, case: &Case) -> Lookup {
        let (k, digest) = match self.entries.get(&case.name) {
            None => return Lookup::Missing,
            Some(Stored::Outcome { k, case, .. } | Stored::Unavailable { k, case, .. }) => (*k, *case),
        };
        if digest != case_digest(case) {
            return Lookup::OtherCase;
        }
        match &self.entries[&case.name] {
            Stored::Outcome { fields, .. } => match decode_outcome(case, fields) {
                Some(o) => Lookup::Found(k, Box::new(Ok(o))),
                None => Lookup::Found(k, Box::new(Err("malformed golden entry".into()))),
            },
            Stored::Unavailable { reason, .. } => Lookup::Found(k, Box::new(Err(reason.clone()))),
        }
    }

    /// The file contents (uncompressed), lines sorted by case name.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{MAGIC} {GOLDEN_VERSION} vendor={} seed={} count={} cpu={}\n",
            self.vendor.name(),
            self.seed,
            self.count,
            self.cpu
        );
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        for n in names {
            match &self.entries[n] {
                Stored::Outcome { k, case, fields } => {
                    let _ = writeln!(s, "{n}\t{k}\t{case:016x}\t{}", fields.join("\t"));
                }
                Stored::Unavailable { k, case, reason } => {
                    let _ = writeln!(s, "{n}\t{k}\t{case:016x}\t!{reason}");
                }
            }
        }
        s
    }

    /// Parses the text of a golden file (`path` names it in errors).
    pub fn from_text(text: &str, path: &str) -> Result<Golden, GoldenError> {
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("");
        let hdr = |msg: &str| GoldenError::Header { path: path.into(), msg: msg.into() };
        // What `to_text` writes has none (a CR would not survive a rewrite at the end of a line).
        if head.contains('\r') {
            return Err(hdr("a carriage return in the header line"));
        }
        let rest = head.strip_prefix(MAGIC).ok_or_else(|| hdr("no header line"))?.trim_start();
        let (version, rest) = rest.split_once(' ').ok_or_else(|| hdr("no version"))?;
        if version != GOLDEN_VERSION.to_string() {
            return Err(hdr(&format!("it has version {version}")));
        }
        let (before_cpu, cpu) = rest.split_once(" cpu=").ok_or_else(|| hdr("no cpu= field"))?;
        let mut g = Golden::new(Vendor::Amd, 0, 0, cpu);
        for kv in before_cpu.split_whitespace() {
            match kv.split_once('=') {
                Some(("vendor", v)) => g.vendor = v.parse().map_err(|e: String| hdr(&e))?,
                Some(("seed", v)) => g.seed = v.parse().map_err(|_| hdr("bad seed"))?,
                Some(("count", v)) => g.count = v.parse().map_err(|_| hdr("bad count"))?,
                _ => return Err(hdr(&format!("unknown field {kv}"))),
            }
        }
        for (n, line) in lines.enumerate() {
            let bad = |msg: &str| GoldenError::Parse { path: path.into(), line: n + 2, msg: msg.into() };
            if line.contains('\r') {
                return Err(bad("a carriage return in the line"));
            }
            let mut f = line.split('\t');
            let name = f.next().filter(|s| !s.is_empty()).ok_or_else(|| bad("no case name"))?;
            let k = f.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("no prefix length"))?;
            let case = f.next().and_then(hex64).ok_or_else(|| bad("no case digest"))?;
            let fields: Vec<String> = f.map(str::to_string).collect();
            let stored = match fields.first().and_then(|s| s.strip_prefix('!')) {
                Some(reason) if fields.len() == 1 => {
                    Stored::Unavailable { k, case, reason: reason.to_string() }
                }
                _ if fields.len() == 8 => Stored::Outcome { k, case, fields },
                _ => return Err(bad(&format!("{} fields, expected 8", fields.len()))),
            };
            g.entries.insert(name.to_string(), stored);
        }
        Ok(g)
    }

    /// Reads a (zstd-compressed) golden file.
    pub fn read(path: &Path) -> Result<Golden, GoldenError> {
        let p = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| GoldenError::Io { path: p.clone(), source })?;
        let text =
            zstd::decode_all(&raw[..]).map_err(|source| GoldenError::Io { path: p.clone(), source })?;
        let text = String::from_utf8(text)
            .map_err(|_| GoldenError::Header { path: p.clone(), msg: "not UTF-8".into() })?;
        Golden::from_text(&text, &p)
    }

    /// Writes the file (zstd-compressed), replacing it atomically.
    pub fn write(&self, path: &Path) -> Result<(), GoldenError> {
        let p = path.display().to_string();
        let io = |source| GoldenError::Io { path: p.clone(), source };
        let z = zstd::encode_all(self.to_text().as_bytes(), 19).map_err(io)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, z).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// What one mismatch report of a difftest run says about the reference CPU: the prefix length
/// and the reference's value of every field that differed (`rflags`, a GPR name, `xmm0`..,
/// `end`, `rip`, or `mem ADDR` with the 16 bytes from ADDR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportedCase {
    pub k: usize,
    pub fields: Vec<(String, String)>,
}

/// Parses the mismatch reports of a `krr-difftest` run (its stdout): case name → what the
/// reference ("kvm") side had where the two differed. A case reported twice merges.
pub fn parse_report(text: &str) -> HashMap<String, ReportedCase> {
    let mut out: HashMap<String, ReportedCase> = HashMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("MISMATCH ") {
            cur = rest.split_whitespace().next().map(str::to_string);
            if let Some(n) = &cur {
                out.entry(n.clone()).or_default();
            }
            continue;
        }
        let Some(name) = &cur else { continue };
        let e = out.get_mut(name).expect("entry made at MISMATCH");
        if let Some(k) = line.trim().strip_prefix("states differ after instruction ") {
            e.k = k.trim_end_matches(':').parse().unwrap_or(0);
        } else if let Some(d) = line.strip_prefix("    ") {
            if d.starts_with(' ') {
                continue;
            }
            let Some((key, val)) = d.split_once(": kvm ") else { continue };
            let Some((kvm, _emu)) = val.split_once(" | emu ") else { continue };
            let kvm = kvm.split(" [").next().unwrap_or(kvm).trim().to_string();
            e.fields.retain(|(k, _)| k != key);
            e.fields.push((key.to_string(), kvm));
        } else if !line.starts_with("  ") {
            cur = None;
        }
    }
    out
}

fn parse_end(s: &str) -> Option<End> {
    if s == "done" {
        return Some(End::Done);
    }
    // "#PF(0x5) cr2=0x3000", "#AC(0x0)", "#UD".
    let s = s.strip_prefix('#')?;
    let (head, cr2) = match s.split_once(" cr2=") {
        Some((h, c)) => (h, Some(u64::from_str_radix(c.trim_start_matches("0x"), 16).ok()?)),
        None => (s, None),
    };
    let (name, ec) = match head.split_once('(') {
        Some((n, e)) => {
            (n, Some(u64::from_str_radix(e.trim_end_matches(')').trim_start_matches("0x"), 16).ok()?))
        }
        None => (head, None),
    };
    let vector = (0u8..32).find(|&v| crate::compare::vector_name(v) == name)?;
    Some(End::Exception { vector, error_code: ec, cr2 })
}

/// Applies one report's reference values to `o` (krr-emu's outcome of the same prefix, which
/// agreed everywhere else). Returns an error naming a field it cannot apply.
pub fn apply_reported(o: &mut Outcome, r: &ReportedCase) -> Result<(), String> {
    let num = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|e| format!("{v}: {e}"));
    for (key, val) in &r.fields {
        if let Some(i) = crate::case::GPR_NAMES.iter().position(|n| n == key) {
            o.gprs[i] = num(val)?;
        } else if let Some(i) = key.strip_prefix("xmm").and_then(|i| i.parse::<usize>().ok()) {
            *o.xmm.get_mut(i).ok_or_else(|| format!("{key}: no such register"))? =
                u128::from_str_radix(val.trim_start_matches("0x"), 16).map_err(|e| format!("{key}: {e}"))?;
        } else if let Some(addr) = key.strip_prefix("mem ") {
            let outside = || format!("{key}: outside the window");
            let off = num(addr)?.checked_sub(crate::layout::DATA_BASE).ok_or_else(outside)?;
            let off = usize::try_from(off).map_err(|_| outside())?;
            let bytes: Vec<u8> = val
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|b| u8::from_str_radix(b, 16))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{key}: {e}"))?;
            o.mem
                .get_mut(off..off.checked_add(bytes.len()).ok_or_else(outside)?)
                .ok_or_else(outside)?
                .copy_from_slice(&bytes);
        } else {
            match key.as_str() {
                "rflags" => o.rflags = num(val)?,
                "rip" => o.rip = num(val)?,
                "mxcsr" => o.mxcsr = num(val)? as u32,
                "end" => o.end = parse_end(val).ok_or_else(|| format!("end: cannot read {val}"))?,
                other => return Err(format!("the report's field {other} is not supported")),
            }
        }
    }
    Ok(())
}

/// Seeds a golden set from a difftest report made on a host of another vendor, whose emulator
/// side was krr-emu in `reported_profile`: every case gets krr-emu's outcome in that profile,
/// patched with the report's values where the report names a difference (at the prefix the
/// report names). `run(case, k)` runs krr-emu; `not_comparable(case)` names the cases the
/// report's host could not compare (kept as unavailable).
pub fn seed_from_report(
    golden: &mut Golden,
    cases: &[Case],
    report: &HashMap<String, ReportedCase>,
    mut run: impl FnMut(&Case, usize) -> crate::case::RunResult,
    mut not_comparable: impl FnMut(&Case) -> Option<String>,
) -> Result<(), String> {
    for c in cases {
        if let Some(why) = not_comparable(c) {
            golden.put_unavailable(c, &why);
            continue;
        }
        let (k, rep) = match report.get(&c.name) {
            Some(r) => (if r.k == 0 { c.insns.len() } else { r.k }, Some(r)),
            None => (c.insns.len(), None),
        };
        let mut o = run(c, k).map_err(|e| format!("{}: krr-emu: {e:?}", c.name))?;
        if let Some(r) = rep {
            apply_reported(&mut o, r).map_err(|e| format!("{}: {e}", c.name))?;
        }
        golden.put(c, k, &o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::RAX;

    fn case() -> Case {
        let mut c = Case::new("t", "x");
        c.gprs[RAX] = 5;
        c.insns = vec![vec![0x90], vec![0x90]];
        c
    }

    fn outcome(c: &Case) -> Outcome {
        let mut mem = c.mem.clone();
        mem[0x10..0x13].copy_from_slice(&[1, 2, 3]);
        let mut st = [[0u8; 10]; 8];
        st[2] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f];
        Outcome {
            end: End::Exception { vector: 14, error_code: Some(4), cr2: Some(0x1b) },
            gprs: {
                let mut g = c.gprs;
                g[3] = 0xdead;
                g
            },
            rip: 0x100002,
            rflags: 0x10a97,
            xmm: {
                let mut x = c.xmm;
                x[7] = 1 << 100;
                x
            },
            mxcsr: 0x1fa0,
            x87: X87 { fcw: 0x37f, fsw: 0x3800, ftw: 0x80, st },
            mem,
        }
    }

    #[test]
    fn outcomes_round_trip_through_text() {
        let c = case();
        let o = outcome(&c);
        let mut g = Golden::new(Vendor::Intel, 1, 5000, "test CPU");
        g.put(&c, 2, &o);
        let mut c2 = case();
        c2.name = "t/y".into();
        g.put_unavailable(&c2, "host said no");
        let text = g.to_text();
        let back = Golden::from_text(&text, "mem").unwrap();
        assert_eq!(back, g);
        assert_eq!(back.get(&c), Lookup::Found(2, Box::new(Ok(o))));
        assert_eq!(back.get(&c2), Lookup::Found(2, Box::new(Err("host said no".into()))));
        let mut changed = case();
        changed.gprs[RAX] = 6;
        assert_eq!(back.get(&changed), Lookup::OtherCase);
        changed.name = "t/z".into();
        assert_eq!(back.get(&changed), Lookup::Missing);
        assert_eq!(back.vendor, Vendor::Intel);
    }

    #[test]
    fn damaged_files_are_errors_with_a_line() {
        assert!(matches!(Golden::from_text("hello\n", "f"), Err(GoldenError::Header { .. })));
        let bad = format!("{MAGIC} 1 vendor=amd seed=1 count=0 cpu=x\nname\t1\t0\tdone\n");
        let e = Golden::from_text(&bad, "f").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let other = format!("{MAGIC} 9 vendor=amd seed=1 count=0 cpu=x\n");
        assert!(Golden::from_text(&other, "f").unwrap_err().to_string().contains("version 9"));
        // A CR at the end of a line would not survive a rewrite (found by fuzz/golden_parser).
        let cr = format!("{MAGIC} 1 vendor=amd seed=1 count=0 cpu=x\r");
        assert!(matches!(Golden::from_text(&cr, "f"), Err(GoldenError::Header { .. })));
        // Hex that is not ASCII is refused, not sliced mid-character.
        let c = case();
        let mut fields = encode_outcome(&c, &outcome(&c));
        fields[7] = "10=\u{20ac}\u{20ac}".into();
        assert_eq!(decode_outcome(&c, &fields), None);
        fields[7] = format!("{:x}=00", usize::MAX);
        assert_eq!(decode_outcome(&c, &fields), None);
    }

    /// Reported fields that name no register or lie outside the window are errors, not panics
    /// (found by fuzz/golden_parser).
    #[test]
    fn a_report_outside_the_machine_is_an_error() {
        let c = case();
        for (key, val) in [("mem 0x10", "[01]"), ("mem 0xffffffffffffffff", "[01, 02]"), ("xmm99", "0x1")] {
            let r = ReportedCase { k: 1, fields: vec![(key.into(), val.into())] };
            let mut o = outcome(&c);
            let e = apply_reported(&mut o, &r).unwrap_err();
            assert!(e.starts_with(key), "{e}");
        }
    }

    #[test]
    fn a_report_patches_the_emulator_outcome() {
        let text = "\
MISMATCH t/x (2 instructions)
  =>  1 0x100000 nop                              90
      2 0x100001 nop                              90
  states differ after instruction 1:
    end: kvm #PF(0x5) cr2=0x3000 | emu #PF(0x4) cr2=0x1b
    rflags: kvm 0xa02 [IF OF] | emu 0x202 [IF] (differ: OF)
    rbx: kvm 0x0000000000000007 | emu 0x000000000000dead
    mem 0x200010: kvm [09, 08] | emu [01, 02]
  initial: rax=0x5 rflags=0x202
";
        let rep = parse_report(text);
        let r = &rep["t/x"];
        assert_eq!(r.k, 1);
        let c = case();
        let mut o = outcome(&c);
        apply_reported(&mut o, r).unwrap();
        assert_eq!(o.end, End::Exception { vector: 14, error_code: Some(5), cr2: Some(0x3000) });
        assert_eq!(o.rflags, 0xa02);
        assert_eq!(o.gprs[3], 7);
        assert_eq!(&o.mem[0x10..0x13], &[9, 8, 3]);
    }
}
