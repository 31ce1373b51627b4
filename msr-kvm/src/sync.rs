//! The synchronisation primitives of the live-replacement code, from one place: std's
//! normally, loom's when built with `--cfg loom`, so loom model-checks the code the product
//! runs (`tests/loom_swap.rs`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
