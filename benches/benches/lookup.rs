//! `lookup`: how fast does a filter decide one access? `Filter::decide` against the kernel's
//! linear scan (`kvm_msr_allowed()`) and a per-MSR `BTreeMap`, for filters of 1, 4, 8, 12 and 16
//! ranges, on probes half of which hit a range.
//!
//! Two measurements per decider:
//! - `ours`, `kernel_scan`, `btreemap`: 1024 independent lookups (throughput);
//! - `ours_chain`, `kernel_scan_chain`, `btreemap_chain`: 1024 lookups where each lookup's
//!   probe is chosen by the previous result (`next = (j + 1 + denied) % 1024`), so every lookup
//!   waits for the one before (latency).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use msr_benches::{kernel_scan, lookup_filter, lookup_probes, BTreeMapFilter, KernelFilter};
use msr_filter_core::{AccessType, Action};

/// Probes per iteration (a power of two: the chain wraps with a mask).
const PROBES: usize = 1024;

/// Independent lookups: the count of denies.
#[inline(always)]
fn independent(probes: &[(u32, AccessType)], decide: impl Fn(u32, AccessType) -> Action) -> u32 {
    let mut denied = 0u32;
    for &(index, access) in probes {
        denied += u32::from(decide(index, access) == Action::Deny);
    }
    denied
}

/// Dependent lookups: each result picks the next probe.
#[inline(always)]
fn chain(probes: &[(u32, AccessType)], decide: impl Fn(u32, AccessType) -> Action) -> u32 {
    let mut denied = 0u32;
    let mut j = 0usize;
    for _ in 0..PROBES {
        let (index, access) = probes[j];
        let deny = usize::from(decide(index, access) == Action::Deny);
        denied += deny as u32;
        j = (j + 1 + deny) & (PROBES - 1);
    }
    denied
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(PROBES as u64));
    for n in [1, 4, 8, 12, 16] {
        let filter = lookup_filter(n);
        let kernel = KernelFilter::new(&filter);
        let map = BTreeMapFilter::new(&filter).expect("per-MSR map of the benchmark filter");
        let probes = lookup_probes(&filter, PROBES);

        group.bench_with_input(BenchmarkId::new("ours", n), &probes, |b, probes| {
            b.iter(|| {
                let filter = black_box(&filter);
                independent(black_box(probes), |i, a| filter.decide(i, a))
            })
        });
        group.bench_with_input(BenchmarkId::new("kernel_scan", n), &probes, |b, probes| {
            b.iter(|| {
                let kernel = black_box(&kernel);
                independent(black_box(probes), |i, a| kernel_scan(kernel, i, a))
            })
        });
        group.bench_with_input(BenchmarkId::new("btreemap", n), &probes, |b, probes| {
            b.iter(|| {
                let map = black_box(&map);
                independent(black_box(probes), |i, a| map.decide(i, a))
            })
        });
        group.bench_with_input(BenchmarkId::new("ours_chain", n), &probes, |b, probes| {
            b.iter(|| {
                let filter = black_box(&filter);
                chain(black_box(probes), |i, a| filter.decide(i, a))
            })
        });
        group.bench_with_input(
            BenchmarkId::new("kernel_scan_chain", n),
            &probes,
            |b, probes| {
                b.iter(|| {
                    let kernel = black_box(&kernel);
                    chain(black_box(probes), |i, a| kernel_scan(kernel, i, a))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("btreemap_chain", n),
            &probes,
            |b, probes| {
                b.iter(|| {
                    let map = black_box(&map);
                    chain(black_box(probes), |i, a| map.decide(i, a))
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = lookup
}
criterion_main!(benches);
