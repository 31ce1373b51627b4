//! `dispatch`: how fast does an MSR exit reach its handler? `Dispatcher::dispatch` (a binary
//! search of the handlers taking the access, plus a per-handler atomic exit counter) against a
//! QEMU-style linear scan of a handler table: `linear_scan` without counters, as QEMU, and
//! `linear_scan_counted` with the same counter as the dispatcher. For 1, 16 and 64 handlers of
//! one MSR each, on synthetic `KVM_EXIT_X86_RDMSR` exits spread evenly over the handled MSRs.
//! Only dispatch is timed; everything is built once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvm_ioctls::{MsrExitReason, ReadMsrExit, VcpuExit};
use msr_benches::{dispatch_msrs, dispatch_probes, LinearDispatcher};
use msr_core::{Access, Action, Policy};
use msr_kvm::handlers::Constant;
use msr_kvm::Dispatcher;

/// Exits per iteration.
const EXITS: usize = 256;

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(EXITS as u64));
    for n in [1, 16, 64] {
        let msrs = dispatch_msrs(n);
        let mut builder = Dispatcher::builder(Policy::<1>::new(Action::Allow));
        let mut linear = LinearDispatcher::new();
        let mut counted = LinearDispatcher::with_counters();
        for &m in &msrs {
            builder = builder
                .handle(m, Access::READ_WRITE, Constant::new(u64::from(m)))
                .expect("register handler");
            linear.handle(m, Constant::new(u64::from(m)));
            counted.handle(m, Constant::new(u64::from(m)));
        }
        let ours = builder.build().expect("build dispatcher");
        let probes = dispatch_probes(&msrs, EXITS);

        group.bench_with_input(BenchmarkId::new("ours", n), &probes, |b, probes| {
            b.iter(|| {
                let ours = black_box(&ours);
                let mut sum = 0u64;
                for &index in black_box(probes) {
                    let (mut data, mut error) = (0u64, 0u8);
                    let mut exit = VcpuExit::X86Rdmsr(ReadMsrExit {
                        error: &mut error,
                        reason: MsrExitReason::Filter,
                        index,
                        data: &mut data,
                    });
                    black_box(ours.dispatch(0, &mut exit));
                    sum = sum.wrapping_add(data ^ u64::from(error));
                }
                sum
            })
        });
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &probes, |b, probes| {
            b.iter(|| {
                let linear = black_box(&linear);
                let mut sum = 0u64;
                for &index in black_box(probes) {
                    let (mut data, mut error) = (0u64, 0u8);
                    let mut exit = VcpuExit::X86Rdmsr(ReadMsrExit {
                        error: &mut error,
                        reason: MsrExitReason::Filter,
                        index,
                        data: &mut data,
                    });
                    black_box(linear.dispatch(0, &mut exit));
                    sum = sum.wrapping_add(data ^ u64::from(error));
                }
                sum
            })
        });
        group.bench_with_input(
            BenchmarkId::new("linear_scan_counted", n),
            &probes,
            |b, probes| {
                b.iter(|| {
                    let linear = black_box(&counted);
                    let mut sum = 0u64;
                    for &index in black_box(probes) {
                        let (mut data, mut error) = (0u64, 0u8);
                        let mut exit = VcpuExit::X86Rdmsr(ReadMsrExit {
                            error: &mut error,
                            reason: MsrExitReason::Filter,
                            index,
                            data: &mut data,
                        });
                        black_box(linear.dispatch(0, &mut exit));
                        sum = sum.wrapping_add(data ^ u64::from(error));
                    }
                    sum
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = dispatch
}
criterion_main!(benches);
