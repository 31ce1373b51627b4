//! The stack the documentation promises is enough: `msr_filter_policy_pack` and
//! `msr_filter_dispatcher_builder_build` run on a thread whose stack is the documented size
//! (`STACK_KIB` in a release build, which `scripts/test-all.sh` runs; builds with debug
//! assertions keep more on the stack and get `DEBUG_STACK_KIB`), on policies that take the
//! packer's longest paths: the exact search over read-only and write-only MSRs interleaved over
//! more than one range's reach; a filter of more than 11 ranges, whose `decide` index is built;
//! a policy the search finds needs 20 ranges; and one whose lower bound alone refuses it.
//! Too small a stack ends the test process with a stack overflow.

use std::ffi::{c_int, c_void};
use std::ptr;

use msr_filter_ffi::*;

/// What the documentation of both functions states, in KiB.
const STACK_KIB: usize = 256;
/// The same in a debug build.
const DEBUG_STACK_KIB: usize = 512;

/// A policy of `rules` rules: single MSRs from `0x1000` every `step` MSRs, reads and writes
/// alternating, denied under default allow.
fn policy(rules: u32, step: u32) -> *mut msr_filter_policy {
    let mut policy = ptr::null_mut();
    // SAFETY: valid out-pointer; the policy is live for the calls that follow.
    unsafe {
        assert_eq!(
            msr_filter_policy_new(msr_filter_action::Allow as u32, &mut policy),
            msr_filter_status::Ok
        );
        for i in 0..rules {
            let access = if i % 2 == 0 {
                msr_filter_access::Read
            } else {
                msr_filter_access::Write
            };
            let msr = 0x1000 + i * step;
            assert_eq!(
                msr_filter_policy_add_rule(
                    policy,
                    msr,
                    msr,
                    access as u32,
                    msr_filter_action::Deny as u32
                ),
                msr_filter_status::Ok
            );
        }
    }
    policy
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
            // SAFETY: live policies and valid out-pointers; everything created is freed.
            unsafe {
                for ok in [fits, paged] {
                    let mut filter = ptr::null_mut();
                    assert_eq!(
                        msr_filter_policy_pack(ok, &mut filter),
                        msr_filter_status::Ok
                    );
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
                for p in [fits, paged, twenty, too_many] {
                    msr_filter_policy_free(p);
                }
            }
        })
        .expect("spawn a thread");
    worker
        .join()
        .expect("pack and build on the documented stack");
}
