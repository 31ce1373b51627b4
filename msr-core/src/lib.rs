//! # msr-filter-core
//!
//! A `no_std`, allocation-free model of Linux KVM's MSR filtering (`KVM_X86_SET_MSR_FILTER`) for
//! virtual machine monitors:
//!
//! - the vocabulary: [`Access`] (the kernel's range flags), [`AccessType`] (one guest access),
//!   [`Action`], and a table of well-known MSR [`names`];
//! - a [`Policy`]: a default action plus rules over inclusive MSR ranges, later rules overriding
//!   earlier ones, built by API or [parsed](Policy::parse) from text;
//! - a [`Filter`]: the kernel's object (default action and 16 range slots with bitmaps stored inline
//!   in u64 words, sized as the kernel reads them), with the kernel's [validation](Filter::from_raw)
//!   and [decision](Filter::decide) rules reproduced exactly, [lints](Filter::lints) for what the
//!   kernel silently ignores, and [`explain`](Filter::explain);
//! - [packing](Policy::pack) a policy into the fewest kernel ranges (then the fewest bitmap bytes).
//!
//! ```
//! use msr_filter_core::{AccessType, Action, Policy};
//!
//! let policy: Policy<16> = Policy::parse(
//!     "default allow\n\
//!      deny rw 0x474f4f00        # a fabricated MSR\n\
//!      deny w  IA32_SPEC_CTRL\n",
//! )
//! .unwrap();
//! let filter = policy.pack().unwrap().filter;
//! assert_eq!(filter.decide(0x48, AccessType::Read), Action::Allow);
//! assert_eq!(filter.decide(0x48, AccessType::Write), Action::Deny);
//! assert_eq!(filter.decide(0x474f4f00, AccessType::Read), Action::Deny);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod abi;
mod access;
mod diff;
mod filter;
pub mod names;
mod pack;
mod parse;
mod policy;
pub mod storm;
pub mod swap;
mod sync;

pub use access::{Access, AccessType, Action};
pub use diff::{diff, Change, Diff};
pub use filter::{
    Decider, Explanation, Filter, InvalidFilter, Lint, Lints, Range, RawFilter, RawRange,
};
pub use pack::{pack_rules, scratch_len, Needed, PackError, Packed};
pub use parse::{
    parse_msr, parse_number, policy_text, statements, MsrText, ParseError, ParseErrorKind, Quoted,
    Span, Statement, Statements,
};
pub use policy::{runs, Policy, PolicyError, PolicyView, Rule};
