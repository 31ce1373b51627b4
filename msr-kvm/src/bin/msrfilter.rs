//! `msrfilter`: check, explain and verify MSR filter policies, and demo them on the real kernel.
fn main() {}
