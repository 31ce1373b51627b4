//! `decide` and both dispatch entry points allocate nothing, through the C ABI: a counting
//! global allocator watches the calling thread while they run (handled and unhandled exits,
//! reads and writes, a refusing callback, and the error path of a bad access value).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::ptr;

use msr_filter_ffi::*;

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counting touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: the caller's layout contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|a| a.set(0));
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.with(Cell::get)
}

unsafe extern "C" fn read_one(_: *mut c_void, _: u32, _: u32, value: *mut u64) -> c_int {
    // SAFETY: the dispatcher passes a live u64.
    unsafe { *value = 1 };
    0
}

unsafe extern "C" fn refuse(_: *mut c_void, _: u32, _: u32, _: u64) -> c_int {
    1
}

#[test]
fn decide_and_dispatch_allocate_nothing() {
    let text = "default allow\ndeny rw 0x474f4f00\ndeny w 0x48\n";
    let mut policy = ptr::null_mut();
    let mut filter = ptr::null_mut();
    let mut builder = ptr::null_mut();
    let mut dispatcher = ptr::null_mut();
    // SAFETY: live out-pointers and text of the given length; handles come from the library.
    unsafe {
        let s = msr_filter_policy_parse(
            text.as_ptr().cast(),
            text.len(),
            &mut policy,
            ptr::null_mut(),
            ptr::null_mut(),
        );
        assert_eq!(s, msr_filter_status::Ok);
        assert_eq!(
            msr_filter_policy_pack(policy, &mut filter),
            msr_filter_status::Ok
        );
        assert_eq!(
            msr_filter_dispatcher_builder_new(policy, &mut builder),
            msr_filter_status::Ok
        );
        assert_eq!(
            msr_filter_dispatcher_builder_add_handler(
                builder,
                0x35,
                0x35,
                3,
                Some(read_one),
                Some(refuse),
                ptr::null_mut()
            ),
            msr_filter_status::Ok
        );
        assert_eq!(
            msr_filter_dispatcher_builder_build(builder, &mut dispatcher),
            msr_filter_status::Ok
        );
    }
    // The counter sees allocations.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))),
        1
    );
    // Warm up the per-thread state the first error path sets (the last-error slot).
    let mut action = msr_filter_action::Allow;
    // SAFETY: a live filter and out-pointer.
    unsafe { msr_filter_filter_decide(filter, 0x48, 9, &mut action) };

    let n = allocations_in(|| {
        for index in [0x10u32, 0x48, 0x830, 0x474f4f00, u32::MAX] {
            for access in [1, 2] {
                // SAFETY: a live filter and out-pointer.
                let s = unsafe { msr_filter_filter_decide(filter, index, access, &mut action) };
                assert_eq!(s, msr_filter_status::Ok);
            }
        }
        // SAFETY: as above; an access out of its domain fails with a fixed message.
        let s = unsafe { msr_filter_filter_decide(filter, 0x48, 3, &mut action) };
        assert_eq!(s, msr_filter_status::InvalidArgument);
    });
    assert_eq!(n, 0, "decide allocated");

    let n = allocations_in(|| {
        let (mut data, mut error, mut outcome) = (0u64, 0u8, msr_filter_outcome::NotMsr);
        for (write, index) in [(false, 0x35), (true, 0x35), (false, 0x474f4f00)] {
            // SAFETY: a live dispatcher and live out-pointers.
            let s = unsafe {
                msr_filter_dispatcher_dispatch_msr(
                    dispatcher,
                    0,
                    write,
                    4,
                    index,
                    &mut data,
                    &mut error,
                    &mut outcome,
                )
            };
            assert_eq!(s, msr_filter_status::Ok);
        }
        assert_eq!(outcome, msr_filter_outcome::Gp);
        let mut run = kvm_bindings::kvm_run {
            exit_reason: kvm_bindings::KVM_EXIT_X86_RDMSR,
            ..Default::default()
        };
        run.__bindgen_anon_1.msr.reason = 4;
        run.__bindgen_anon_1.msr.index = 0x35;
        // SAFETY: a live dispatcher and a whole `kvm_run`.
        let s = unsafe {
            msr_filter_dispatcher_dispatch_run(
                dispatcher,
                1,
                ptr::addr_of_mut!(run).cast(),
                &mut outcome,
            )
        };
        assert_eq!(s, msr_filter_status::Ok);
        assert_eq!(outcome, msr_filter_outcome::Completed);
        // SAFETY: the dispatcher wrote the msr member.
        assert_eq!(unsafe { run.__bindgen_anon_1.msr.data }, 1);
    });
    assert_eq!(n, 0, "dispatch allocated");

    // SAFETY: handles from the library, freed once.
    unsafe {
        msr_filter_dispatcher_free(dispatcher);
        msr_filter_dispatcher_builder_free(builder);
        msr_filter_filter_free(filter);
        msr_filter_policy_free(policy);
    }
}
