//! Differential tests of krr-emu against the real CPU.
//!
//! On this project's hosts `/dev/kvm` runs guest ring 3 natively (it is silicon), so a case — registers,
//! flags, SSE state, a data window and an instruction sequence — is run at CPL 3 in a KVM vCPU
//! ([`kvm::KvmRunner`]) and in krr-emu ([`emu::EmuRunner`]) from the same machine state
//! ([`layout`]), and the outcomes ([`case::Outcome`]: registers, flags, XMM, MXCSR, window, or the
//! exception delivered) are compared ([`compare`]). See the crate README for what this host can and cannot
//! check.

pub mod case;
pub mod compare;
pub mod corpus;
pub mod emu;
pub mod gen;
pub mod golden;
pub mod kvm;
pub mod layout;
