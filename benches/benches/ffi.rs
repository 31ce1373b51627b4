//! `ffi`: what does `decide` cost through the C ABI? `msr_filter_filter_decide` (panic boundary,
//! NULL checks, access validation, status and out-parameter), called through an `extern "C"`
//! function pointer as C would call it, against `Filter::decide` called from Rust, on the
//! 16-range `lookup` filter and its probes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use msr_benches::{lookup_filter, lookup_probes};
use msr_filter_core::Action;
use msr_filter_ffi::{
    msr_filter_action, msr_filter_filter, msr_filter_filter_decide, msr_filter_filter_free,
    msr_filter_filter_from_kvm, msr_filter_kvm_msr_filter, msr_filter_status,
};
use msr_filter_kvm::convert::KvmFilter;

/// Probes per iteration.
const PROBES: usize = 1024;

type Decide = unsafe extern "C" fn(
    *const msr_filter_filter,
    u32,
    u32,
    *mut msr_filter_action,
) -> msr_filter_status;

fn ffi(c: &mut Criterion) {
    let filter = lookup_filter(16);
    let probes = lookup_probes(&filter, PROBES);
    let raw = msr_filter_kvm_msr_filter::from(KvmFilter::new(&filter).as_raw());
    let mut handle = std::ptr::null_mut();
    // SAFETY: `raw`'s bitmaps point into `filter`, alive for the call; `handle` is writable.
    let status = unsafe { msr_filter_filter_from_kvm(&raw, &mut handle) };
    assert_eq!(status, msr_filter_status::Ok);
    let c_probes: Vec<(u32, u32)> = probes
        .iter()
        .map(|&(index, access)| (index, access.flag().bits()))
        .collect();

    let mut group = c.benchmark_group("ffi_decide");
    group.throughput(Throughput::Elements(PROBES as u64));
    group.bench_function("rust", |b| {
        b.iter(|| {
            let filter = black_box(&filter);
            let mut denied = 0u32;
            for &(index, access) in black_box(&probes) {
                denied += u32::from(filter.decide(index, access) == Action::Deny);
            }
            denied
        })
    });
    group.bench_function("c_abi", |b| {
        // Called through a pointer the optimiser cannot see through, as C calls it.
        let decide: Decide = black_box(msr_filter_filter_decide);
        b.iter(|| {
            let handle = black_box(handle.cast_const());
            let mut denied = 0u32;
            for &(index, access) in black_box(&c_probes) {
                let mut action = msr_filter_action::Allow;
                // SAFETY: a live filter handle and a live out-parameter.
                let status = unsafe { decide(handle, index, access, &mut action) };
                debug_assert_eq!(status, msr_filter_status::Ok);
                denied += u32::from(action == msr_filter_action::Deny);
            }
            denied
        })
    });
    group.finish();

    // Both decide alike on every probe.
    for (&(index, access), &(_, c_access)) in probes.iter().zip(&c_probes) {
        let mut action = msr_filter_action::Allow;
        // SAFETY: as above.
        unsafe { msr_filter_filter_decide(handle, index, c_access, &mut action) };
        assert_eq!(
            action == msr_filter_action::Deny,
            filter.decide(index, access) == Action::Deny
        );
    }
    // SAFETY: the handle from the library, freed once.
    unsafe { msr_filter_filter_free(handle) };
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = ffi
}
criterion_main!(benches);
