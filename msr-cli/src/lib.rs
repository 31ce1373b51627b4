//! # msr-filter-cli
//!
//! The `msrfilter` command-line tool (check, explain, pack, diff, verify and demo KVM MSR filter
//! policies), and the two formats it reads and writes that other tools may want as a library:
//!
//! - [`json`]: one documented JSON form of `struct kvm_msr_filter`, both ways, with the kernel's
//!   own verdict on a filter read from it;
//! - [`emit`]: a packed filter as a self-contained C header or as Rust `const`s.
//!
//! A VMM links `msr-filter-kvm` (or `msr-filter-core`), never this crate: it exists so that no
//! library user compiles `clap` or `serde_json`.

pub mod emit;
pub mod json;
