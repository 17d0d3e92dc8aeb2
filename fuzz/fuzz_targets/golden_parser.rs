//! Arbitrary text as krr-difftest's golden file and as a difftest mismatch report (what
//! `--golden-from-report` reads): the parsers return errors, never panic; a golden set that
//! parses reads back the same from its own text, and every stored outcome decodes against a case
//! or is refused.
#![no_main]

use krr_difftest::case::{Case, End, Outcome, X87};
use krr_difftest::golden::{apply_reported, decode_outcome, parse_report, Golden, Stored};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let case = Case::new("fuzz", "x");
    if let Ok(g) = Golden::from_text(text, "fuzz") {
        let again = Golden::from_text(&g.to_text(), "fuzz").expect("a golden set reads its own text");
        assert_eq!(again, g, "written and read again");
        for stored in g.entries.values() {
            if let Stored::Outcome { fields, .. } = stored {
                let _ = decode_outcome(&case, fields);
            }
        }
    }
    for reported in parse_report(text).values() {
        let mut o = Outcome {
            end: End::Done,
            gprs: case.gprs,
            rip: 0,
            rflags: case.rflags,
            xmm: case.xmm,
            mxcsr: case.mxcsr,
            x87: X87::default(),
            mem: case.mem.clone(),
        };
        let _ = apply_reported(&mut o, reported);
        assert_eq!(o.mem.len(), case.mem.len(), "the window keeps its size");
    }
});
