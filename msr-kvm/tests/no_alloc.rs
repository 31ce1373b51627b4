//! `Filter::decide`, `Dispatcher::dispatch_msr` and `LiveDispatcher::dispatch_msr` allocate
//! nothing: a counting global allocator sees no allocation while they run, on handled exits,
//! exits no handler takes (routes, per-MSR counters) and faults.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use kvm_ioctls::MsrExitReason;
use msr_filter_core::{Access, AccessType, Action, Policy};
use msr_filter_kvm::handlers::{Constant, Shadow};
use msr_filter_kvm::{Dispatcher, LiveDispatcher, MsrInterception};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (this test file runs one test, so no other thread allocates).
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    f();
    COUNTING.store(false, Relaxed);
    ALLOCATIONS.load(Relaxed)
}

fn dispatcher() -> Dispatcher {
    let mut b = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
        .handle(0xc000_0103, Access::READ_WRITE, Shadow::new(2, 0))
        .unwrap();
    for i in 0..300u32 {
        b = b
            .handle(0x4000_0000 + i, Access::READ, Constant::new(u64::from(i)))
            .unwrap();
    }
    b.build().unwrap()
}

/// MSRs with a handler, without one (the unhandled route and its per-MSR counter), and writes
/// a handler refuses.
fn exits(dispatch: &dyn Fn(usize, AccessType, u32, &mut u64, &mut u8)) {
    for round in 0..3u32 {
        for index in [
            0xc000_0103,
            0x4000_0000,
            0x4000_012b,
            0x4000_0fff,
            0x4b56_4dfe + round,
        ] {
            for access in AccessType::ALL {
                let (mut data, mut error) = (7, 0);
                dispatch(round as usize % 2, access, index, &mut data, &mut error);
            }
        }
    }
}

#[test]
fn decide_and_dispatch_allocate_nothing() {
    let d = dispatcher();
    let filter = d.filter().clone();
    // Warm up whatever is lazily initialised (the log facade's level, the clock).
    exits(&|v, a, i, data, error| {
        d.dispatch_msr(v, a, MsrExitReason::Filter, i, data, error);
    });
    let n = allocations(|| {
        let mut allowed = 0u32;
        for index in (0..0x5000_0000u32).step_by(0x10_0001) {
            for access in AccessType::ALL {
                allowed += u32::from(filter.decide(index, access) == Action::Allow);
            }
        }
        assert!(allowed > 0);
    });
    assert_eq!(n, 0, "Filter::decide allocated");
    let n = allocations(|| {
        exits(&|v, a, i, data, error| {
            d.dispatch_msr(v, a, MsrExitReason::Filter, i, data, error);
        })
    });
    assert_eq!(n, 0, "Dispatcher::dispatch_msr allocated");

    if !msr_filter_kvm::guest::kvm_available() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    let msrs = MsrInterception::new(&kvm, vm, MsrExitReason::empty()).unwrap();
    let live = LiveDispatcher::new(msrs, 2, dispatcher()).unwrap();
    live.replace(dispatcher()).unwrap();
    let run = || {
        exits(&|v, a, i, data, error| {
            live.enter_run(v);
            live.dispatch_msr(v, a, MsrExitReason::Filter, i, data, error);
        })
    };
    run();
    assert_eq!(
        allocations(run),
        0,
        "LiveDispatcher::dispatch_msr allocated"
    );
    // The check can fail: a `Vec` made on the path is counted.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8]))), 1);
}
