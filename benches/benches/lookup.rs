//! `lookup`: how fast does a filter decide one access? `Filter::decide` (a branch-free binary
//! search over precomputed range boundaries) against the kernel's linear scan
//! (`kvm_msr_allowed()`) and a per-MSR `BTreeMap`, for filters of 1, 4 and 16 ranges, on probes
//! half of which hit a range.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use msr_benches::{kernel_scan, lookup_filter, lookup_probes, BTreeMapFilter, KernelFilter};
use msr_filter_core::Action;

/// Probes per iteration.
const PROBES: usize = 1024;

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(PROBES as u64));
    for n in [1, 4, 16] {
        let filter = lookup_filter(n);
        let kernel = KernelFilter::new(&filter);
        let map = BTreeMapFilter::new(&filter).expect("per-MSR map of the benchmark filter");
        let probes = lookup_probes(&filter, PROBES);

        group.bench_with_input(BenchmarkId::new("ours", n), &probes, |b, probes| {
            b.iter(|| {
                let filter = black_box(&filter);
                let mut denied = 0u32;
                for &(index, access) in black_box(probes) {
                    denied += u32::from(filter.decide(index, access) == Action::Deny);
                }
                denied
            })
        });
        group.bench_with_input(BenchmarkId::new("kernel_scan", n), &probes, |b, probes| {
            b.iter(|| {
                let kernel = black_box(&kernel);
                let mut denied = 0u32;
                for &(index, access) in black_box(probes) {
                    denied += u32::from(kernel_scan(kernel, index, access) == Action::Deny);
                }
                denied
            })
        });
        group.bench_with_input(BenchmarkId::new("btreemap", n), &probes, |b, probes| {
            b.iter(|| {
                let map = black_box(&map);
                let mut denied = 0u32;
                for &(index, access) in black_box(probes) {
                    denied += u32::from(map.decide(index, access) == Action::Deny);
                }
                denied
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookup
}
criterion_main!(benches);
