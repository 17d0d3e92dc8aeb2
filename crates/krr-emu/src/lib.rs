//! x86-64 system emulator (skeleton; see issue 2).
