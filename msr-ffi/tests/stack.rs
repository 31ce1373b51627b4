//! The stack the documentation promises is enough: `msr_filter_policy_pack` and
//! `msr_filter_dispatcher_builder_build` run on a thread whose stack is the documented size
//! (`STACK_KIB` in a release build, which `scripts/test-all.sh` runs; builds with debug
//! assertions keep more on the stack and get `DEBUG_STACK_KIB`), on policies that take the
//! packer's longest paths: the exact search over read-only and write-only MSRs interleaved over
//! more than one range's reach; a filter of more than 11 ranges, whose `decide` index is built;
//! a policy the search finds needs 20 ranges; one whose lower bound alone refuses it; and a
//! dense cluster wide enough that the search pruned by proven bounds runs too (`msr-core`'s
//! `pack/solve.rs`, "Pruning").
//! Too small a stack ends the test process with a stack overflow.

use std::ffi::{c_int, c_void};
use std::ptr;

use msr_filter_ffi::*;

/// What the documentation of both functions states, in KiB.
const STACK_KIB: usize = 256;
/// The same in a debug build.
const DEBUG_STACK_KIB: usize = 512;

/// A policy denying, under default allow, each `(first, last, access)` of `rules`.
fn policy_of(rules: impl IntoIterator<Item = (u32, u32, u32)>) -> *mut msr_filter_policy {
    let mut policy = ptr::null_mut();
    // SAFETY: valid out-pointer; the policy is live for the calls that follow.
    unsafe {
        assert_eq!(
            msr_filter_policy_new(msr_filter_action::Allow as u32, &mut policy),
            msr_filter_status::Ok
        );
        for (first, last, access) in rules {
            assert_eq!(
                msr_filter_policy_add_rule(
                    policy,
                    first,
                    last,
                    access,
                    msr_filter_action::Deny as u32
                ),
                msr_filter_status::Ok
            );
        }
    }
    policy
}

/// A policy of `rules` rules: single MSRs from `0x1000` every `step` MSRs, reads and writes
/// alternating, denied under default allow.
fn policy(rules: u32, step: u32) -> *mut msr_filter_policy {
    policy_of((0..rules).map(|i| {
        let access = if i % 2 == 0 {
            msr_filter_access::Read
        } else {
            msr_filter_access::Write
        };
        let msr = 0x1000 + i * step;
        (msr, msr, access as u32)
    }))
}

/// Runs of 1 to 100 MSRs of random access, 0 to 39 apart, over 0x8000 MSRs: a shape and seed of
/// `msr-core`'s `mixed_runs_over_0x5000_and_0x8000_msrs_are_proven_minimal`, wide and dense
/// enough that the packer computes its lower bounds (the relaxation's program and the phase
/// bound's table) and runs the search pruned by them, which proves the packing minimal.
fn dense_mixed_cluster() -> *mut msr_filter_policy {
    let mut x: u64 = 104_729 | 1;
    let mut below = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut rules = Vec::new();
    let mut at = 0x20_0000u32;
    while at < 0x20_0000 + 0x8000 {
        let len = 1 + below(100) as u32;
        let access = 1 + below(3) as u32;
        rules.push((at, at + len - 1, access));
        at += len + below(40) as u32;
    }
    policy_of(rules)
}

unsafe extern "C" fn read_one(_: *mut c_void, _: u32, _: u32, value: *mut u64) -> c_int {
    // SAFETY: the dispatcher passes a live u64.
    unsafe { *value = 1 };
    0
}

/// Packs and builds on a thread with exactly the documented stack.
#[test]
fn pack_and_build_fit_the_documented_stack() {
    let kib = if cfg!(debug_assertions) {
        DEBUG_STACK_KIB
    } else {
        STACK_KIB
    };
    let worker = std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(|| {
            // 256 rules over 0x3000+ MSRs (one range's reach): the exact search runs.
            let fits = policy(256, 0x31);
            // 14 rules 0x10000 apart: 14 ranges, so `decide`'s paged index is built.
            let paged = policy(14, 0x1_0000);
            // 20 rules 0x10000 apart: the search runs and finds 20 ranges, too many.
            let twenty = policy(20, 0x1_0000);
            // 256 rules 0x10000 apart: the lower bound alone refuses them.
            let too_many = policy(256, 0x1_0000);
            // A cluster the pruned search proves (its tables are on the stack too).
            let dense = dense_mixed_cluster();
            // SAFETY: live policies and valid out-pointers; everything created is freed.
            unsafe {
                for ok in [fits, paged, dense] {
                    let mut filter = ptr::null_mut();
                    assert_eq!(
                        msr_filter_policy_pack(ok, &mut filter),
                        msr_filter_status::Ok
                    );
                    let mut minimal = false;
                    assert_eq!(
                        msr_filter_filter_proven_minimal(filter, &mut minimal),
                        msr_filter_status::Ok
                    );
                    assert!(minimal, "every packing here is proven minimal");
                    msr_filter_filter_free(filter);
                }
                for refused in [twenty, too_many] {
                    let mut filter = ptr::null_mut();
                    assert_eq!(
                        msr_filter_policy_pack(refused, &mut filter),
                        msr_filter_status::PackError
                    );
                    assert!(filter.is_null());
                }

                let mut builder = ptr::null_mut();
                // 14 ranges, and one more for the handlers.
                assert_eq!(
                    msr_filter_dispatcher_builder_new(paged, &mut builder),
                    msr_filter_status::Ok
                );
                for msr in 0x4000_0000..0x4000_0040 {
                    assert_eq!(
                        msr_filter_dispatcher_builder_add_handler(
                            builder,
                            msr,
                            msr,
                            msr_filter_access::Read as u32,
                            Some(read_one),
                            None,
                            ptr::null_mut(),
                        ),
                        msr_filter_status::Ok
                    );
                }
                let mut dispatcher = ptr::null_mut();
                assert_eq!(
                    msr_filter_dispatcher_builder_build(builder, &mut dispatcher),
                    msr_filter_status::Ok
                );
                msr_filter_dispatcher_free(dispatcher);
                msr_filter_dispatcher_builder_free(builder);
                for p in [fits, paged, twenty, too_many, dense] {
                    msr_filter_policy_free(p);
                }
            }
        })
        .expect("spawn a thread");
    worker
        .join()
        .expect("pack and build on the documented stack");
}
