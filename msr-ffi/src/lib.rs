//! # msr-filter-ffi
//!
//! The C ABI of msr-filter, for virtual machine monitors written in C: KVM MSR filter policies
//! (parsed or built rule by rule), packing into the kernel's 16 ranges, decisions and their
//! explanation, the filter as a `struct kvm_msr_filter`, ordering-safe install on a VM fd, and
//! MSR exit dispatch to C callbacks. The header is `include/msr_filter.h`, generated from this
//! crate by cbindgen.
//!
//! A translation layer only: every function converts its arguments, calls
//! [`msr_filter_core`] or [`msr_filter_kvm`], and converts the result.
//!
//! Conventions, for every function:
//! - fallible functions return a `msr_filter_status`; on failure the thread's last error message
//!   (`msr_filter_last_error_message`) says more;
//! - objects are opaque handles returned through out-parameters (set to NULL on failure) and
//!   freed by the matching `*_free`, which accepts NULL;
//! - every pointer is checked: NULL gives `MSR_FILTER_STATUS_NULL_ARGUMENT` (parameters
//!   documented as optional excepted);
//! - a panic inside the library never crosses into C: it becomes `MSR_FILTER_STATUS_PANIC`
//!   (and a panicking handler in dispatch is a #GP for the guest);
//! - each function's documentation says who owns what and which threads may call it.
//!
//! Replacing the dispatcher and its filter while vCPUs run goes through `msr_filter_live`, over
//! msr-filter-kvm's live-swap protocol ([`msr_filter_kvm::LiveDispatcher`]).
#![allow(non_camel_case_types)]
// The header's documentation is these doc comments; the # Safety sections say what C must
// guarantee.
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod dispatch;
mod error;
mod filter;
mod learn;
mod live;
mod policy;
mod types;
mod vm;

use std::ffi::c_char;

pub use dispatch::*;
pub use error::{msr_filter_last_error_message, msr_filter_status, msr_filter_status_name};
pub use filter::*;
pub use learn::*;
pub use live::*;
pub use policy::*;
pub use types::*;
pub use vm::*;

/// The library's version, e.g. `"0.1.0"`: a static string, never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn msr_filter_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}
