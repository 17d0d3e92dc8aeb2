//! Re-measures what this host's KVM does with ring-3 code (the facts in README.md, "What this host can
//! and cannot check"). Run: `cargo run --release -p krr-difftest --example host_quirks`.

use krr_difftest::case::{Case, End, Outcome, RAX, RBX};
use krr_difftest::compare::vector_name;
use krr_difftest::kvm::KvmRunner;
use krr_difftest::layout::DATA_BASE;

fn show(what: &str, r: &Result<Outcome, krr_difftest::case::Failure>, extra: impl Fn(&Outcome) -> String) {
    match r {
        Ok(o) => {
            let end = match o.end {
                End::Done => "done".to_string(),
                End::Exception { vector, error_code, .. } => {
                    format!(
                        "#{}{}",
                        vector_name(vector),
                        error_code.map(|e| format!("({e:#x})")).unwrap_or_default()
                    )
                }
            };
            println!("{what:<58} {end:<10} rip={:#x} {}", o.rip, extra(o));
        }
        Err(e) => println!("{what:<58} failed: {e:?}"),
    }
}

fn case(insns: Vec<Vec<u8>>) -> Case {
    let mut c = Case::new("quirk", "x");
    c.gprs[RBX] = DATA_BASE + 0x1000;
    c.insns = insns;
    c
}

fn main() {
    let mut k = match KvmRunner::new() {
        Ok(k) => k,
        Err(e) => {
            println!("no KVM: {e}");
            std::process::exit(2);
        }
    };
    let rax = |o: &Outcome| format!("rax={:#x}", o.gprs[RAX]);
    // push 0x3202; popfq; pushfq; pop rax: IOPL 3 asked from ring 3 (ignored at CPL 3 anyway).
    let c = case(vec![vec![0x68, 0x02, 0x32, 0, 0], vec![0x9d], vec![0x9c], vec![0x58]]);
    show("popfq 0x3202 then pushf (IOPL, IF seen by ring 3)", &k.run(&c), |o| {
        format!("{} reported rflags={:#x}", rax(o), o.rflags)
    });
    // in al, 0x10: allowed by the TSS I/O bitmap although IOPL is 0.
    show("in al, 0x10 (I/O bitmap allows, IOPL 0)", &k.run(&case(vec![vec![0xe4, 0x10]])), rax);
    // mov ax, cs ; mov cx, ss -> rax, rcx
    let c = case(vec![vec![0x8c, 0xc8], vec![0x8c, 0xd1]]);
    show("selectors seen by ring 3 (cs in rax, ss in rcx)", &k.run(&c), |o| {
        format!("cs={:#x} ss={:#x}", o.gprs[0], o.gprs[1])
    });
    let mut c = case(vec![vec![0x48, 0x8b, 0x43, 0x01]]);
    c.rflags = 0x40202;
    show("AC=1 + misaligned load (guest CR0.AM=1 in the layout)", &k.run(&c), |_| String::new());
    show("int 0x80 (no gate)", &k.run(&case(vec![vec![0xcd, 0x80]])), |_| String::new());
    show("int 3 (DPL-3 gate)", &k.run(&case(vec![vec![0xcc]])), |_| String::new());
    show("int1 / icebp (a trap: rip should be next)", &k.run(&case(vec![vec![0xf1]])), |_| String::new());
    show("syscall (LSTAR = 0)", &k.run(&case(vec![vec![0x0f, 0x05]])), |_| String::new());
    show("vzeroupper with guest CR4.OSXSAVE=0", &k.run(&case(vec![vec![0xc5, 0xf8, 0x77]])), |_| {
        String::new()
    });
    show(
        "rdfsbase rax with guest CR4.FSGSBASE=0",
        &k.run(&case(vec![vec![0xf3, 0x48, 0x0f, 0xae, 0xc0]])),
        rax,
    );
    show("ud2 (fault: RF in the pushed RFLAGS)", &k.run(&case(vec![vec![0x0f, 0x0b]])), |o| {
        format!("frame rflags={:#x}", o.rflags)
    });
    // stmxcsr [rbx]; mov eax, [rbx]
    let mut c = case(vec![vec![0x0f, 0xae, 0x1b], vec![0x8b, 0x03]]);
    c.mxcsr = 0x9fc0;
    show("MXCSR loaded through KVM_SET_XSAVE (asked 0x9fc0)", &k.run(&c), |o| {
        format!("stmxcsr={:#x} read back={:#x}", o.gprs[0] as u32, o.mxcsr)
    });
    let mut c = case(vec![vec![0x0f, 0xa2]]);
    c.gprs[RAX] = 0;
    show("cpuid leaf 0 (host values)", &k.run(&c), |o| {
        let v: Vec<u8> = [o.gprs[3] as u32, o.gprs[2] as u32, o.gprs[1] as u32]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        format!("vendor={}", String::from_utf8_lossy(&v))
    });
}
