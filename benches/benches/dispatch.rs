//! `dispatch`: how fast does an MSR exit reach its handler? `Dispatcher::dispatch` (the
//! per-page handler index, the call, a per-vCPU exit counter) against what a VMM writes first:
//! `btreemap` (`BTreeMap<u32, Arc<dyn MsrHandler>>`, failing closed the same way, no counters)
//! and QEMU's linear scan of a handler table (`linear_scan`; `linear_scan_counted` adds a
//! per-handler atomic counter). `ours_uncounted` is the dispatcher built with
//! `exit_counters(false)`: the difference to `ours` is what the counts cost. For 1, 16, 256 and
//! 4096 handlers of one MSR each, on synthetic `KVM_EXIT_X86_RDMSR` exits spread evenly over the
//! handled MSRs. Only dispatch is timed; everything is built once.
//!
//! `threads` and `live_dispatch` are described at their functions.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvm_ioctls::VcpuExit;
use msr_benches::{dispatch_probes, dispatch_setup, read_exit};

/// Exits per iteration.
const EXITS: usize = 256;

/// Completes a FILTER `rdmsr` exit for every probe with `dispatch`; a checksum of the results
/// keeps the work observable.
#[inline]
fn complete_all(probes: &[u32], dispatch: impl Fn(&mut VcpuExit<'_>)) -> u64 {
    black_box(probes).iter().fold(0u64, |sum, &index| {
        let (data, error) = read_exit(index, &dispatch);
        sum.wrapping_add(data ^ u64::from(error))
    })
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(EXITS as u64));
    for n in [1, 16, 256, 4096] {
        let setup = dispatch_setup(n);
        let probes = dispatch_probes(&setup.msrs, EXITS);
        let (ours, linear, counted) = (&setup.ours, &setup.linear, &setup.counted);
        let btreemap = &setup.btreemap;
        group.bench_with_input(BenchmarkId::new("btreemap", n), &probes, |b, probes| {
            b.iter(|| {
                complete_all(probes, |e| {
                    black_box(black_box(btreemap).dispatch(0, e));
                })
            })
        });
        // One closure per dispatcher type: the counted and uncounted runs share machine code.
        for (name, dispatcher) in [("ours", ours), ("ours_uncounted", &setup.uncounted)] {
            group.bench_with_input(BenchmarkId::new(name, n), &probes, |b, probes| {
                b.iter(|| {
                    complete_all(probes, |e| {
                        black_box(black_box(dispatcher).dispatch(0, e));
                    })
                })
            });
        }
        for (name, dispatcher) in [("linear_scan", linear), ("linear_scan_counted", counted)] {
            group.bench_with_input(BenchmarkId::new(name, n), &probes, |b, probes| {
                b.iter(|| {
                    complete_all(probes, |e| {
                        black_box(black_box(dispatcher).dispatch(0, e));
                    })
                })
            });
        }
    }
    group.finish();
}

/// `threads`: do vCPU threads slow each other down? One `Dispatcher` (16 handlers) shared by 1
/// or 2 threads, each completing `EXITS` exits per iteration as its own vCPU index; throughput
/// is exits per second over all threads (2 threads at 2x one thread's = no interference). The
/// `BTreeMap` baseline (no counters) the same way.
fn threads(c: &mut Criterion) {
    let setup = dispatch_setup(16);
    let probes = dispatch_probes(&setup.msrs, EXITS);
    let mut group = c.benchmark_group("threads");
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements((EXITS * threads) as u64));
        let run = |iters: u64, dispatch: &(dyn Fn(usize, &mut VcpuExit<'_>) + Sync)| {
            let start = std::sync::Barrier::new(threads);
            let begin = std::time::Instant::now();
            std::thread::scope(|s| {
                for vcpu in 0..threads {
                    let (start, probes) = (&start, &probes);
                    s.spawn(move || {
                        start.wait();
                        for _ in 0..iters {
                            black_box(complete_all(probes, |e| dispatch(vcpu, e)));
                        }
                    });
                }
            });
            begin.elapsed()
        };
        let ours = &setup.ours;
        group.bench_function(BenchmarkId::new("ours", threads), |b| {
            b.iter_custom(|iters| {
                run(iters, &|v, e| {
                    black_box(ours.dispatch(v, e));
                })
            })
        });
        let btreemap = &setup.btreemap;
        group.bench_function(BenchmarkId::new("btreemap", threads), |b| {
            b.iter_custom(|iters| {
                run(iters, &|v, e| {
                    black_box(btreemap.dispatch(v, e));
                })
            })
        });
    }
    group.finish();
}

/// `live_dispatch`: what live replacement costs per exit. `LiveDispatcher` (the quiescent point
/// `enter_run` before each exit's `KVM_RUN`, then the table walk and `Dispatcher::dispatch`)
/// against the bare `Dispatcher`, same handlers. Needs `/dev/kvm` for the VM whose interception
/// the live dispatcher owns (no guest runs); skipped without it.
fn live_dispatch(c: &mut Criterion) {
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        println!("SKIPPED: no /dev/kvm (live_dispatch)");
        return;
    };
    let mut group = c.benchmark_group("live_dispatch");
    group.throughput(Throughput::Elements(EXITS as u64));
    for n in [1, 16, 64] {
        let setup = dispatch_setup(n);
        let probes = dispatch_probes(&setup.msrs, EXITS);
        let vm = std::sync::Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
        let msrs =
            msr_filter_kvm::MsrInterception::new(&kvm, vm, kvm_ioctls::MsrExitReason::empty())
                .expect("MSR interception");
        let live =
            msr_filter_kvm::LiveDispatcher::new(msrs, 1, dispatch_setup(n).ours).expect("install");
        let ours = &setup.ours;
        group.bench_with_input(BenchmarkId::new("dispatcher", n), &probes, |b, probes| {
            b.iter(|| {
                complete_all(probes, |e| {
                    black_box(black_box(ours).dispatch(0, e));
                })
            })
        });
        let live = &live;
        group.bench_with_input(BenchmarkId::new("live", n), &probes, |b, probes| {
            b.iter(|| {
                complete_all(probes, |e| {
                    black_box(live).enter_run(0);
                    black_box(black_box(live).dispatch(0, e));
                })
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
    targets = dispatch, threads, live_dispatch
}
criterion_main!(benches);
