//! The atomics the crate uses, from one place: `core`'s normally, loom's when built with
//! `--cfg loom`, so that loom model-checks the very code the product runs (see
//! [`swap`](crate::swap)).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
