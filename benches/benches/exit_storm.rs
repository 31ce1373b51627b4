//! `exit_storm`: what does denying a pass-through MSR cost the guest? A real guest on `/dev/kvm`
//! runs a loop of 1000 `rdmsr` of one MSR, once with no filter (KVM passes the MSR through or
//! handles it in the kernel) and once with a filter denying its reads, every exit completed in
//! user space by a `Dispatcher` with a `handlers::Shadow`. `count1` is the same guest entry with a
//! single read: the fixed cost (set registers, enter, `hlt` exit, read registers) that the
//! 1000-read loops include once.
//!
//! `denied_raw_loop` is the same denied guest with each exit completed by a closure that writes
//! the value straight into it, no dispatcher; the target is `denied_to_dispatcher` at 0.98x its
//! exits per second or better. The two alternate: each timed entry of one follows an untimed
//! entry of the other, so neither gains from the order they are measured in.
//!
//! Without `/dev/kvm` it prints `SKIPPED: no /dev/kvm` and registers nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use kvm_ioctls::{MsrExitReason, VcpuExit};
use msr_filter_core::{Access, Action, Policy};
use msr_filter_kvm::guest::{kvm_available, GuestResult, GuestVm, MsrAccess};
use msr_filter_kvm::handlers::Shadow;
use msr_filter_kvm::{Dispatcher, MsrInterception};

/// Reads per guest entry.
const READS: u16 = 1000;
/// What the `Shadow` handler returns.
const SHADOW_VALUE: u64 = 0x5eed_0000_1234;

fn exit_storm(c: &mut Criterion) {
    if !kvm_available() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let mut group = c.benchmark_group("exit_storm");
    group.sampling_mode(SamplingMode::Flat);
    for (name, index) in [("FS_BASE", 0xc000_0100), ("KERNEL_GS_BASE", 0xc000_0102)] {
        let read = MsrAccess::Read { index };

        // No filter: the kernel handles every read.
        let mut plain = GuestVm::new().expect("GuestVm::new");
        let stats = plain
            .run_repeated(read, READS, &mut |_| {})
            .expect("run_repeated");
        assert_eq!((stats.msr_exits, stats.retired), (0, READS), "{name}");
        let no_exit = &mut |exit: &mut VcpuExit<'_>| panic!("unexpected exit {exit:?}");

        // Denied: every read exits to the dispatcher's Shadow handler.
        let mut denied = GuestVm::new().expect("GuestVm::new");
        let dispatcher = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
            .handle(index, Access::READ, Shadow::new(1, SHADOW_VALUE))
            .expect("register handler")
            .build()
            .expect("build dispatcher");
        let mut interception =
            MsrInterception::new(denied.kvm(), denied.shared_vm(), MsrExitReason::empty())
                .expect("enable user-space MSR exits");
        interception
            .install(dispatcher.filter())
            .expect("install filter");
        let mut to_dispatcher = |exit: &mut VcpuExit<'_>| {
            dispatcher.dispatch(0, exit);
        };
        let stats = denied
            .run_repeated(read, READS, &mut to_dispatcher)
            .expect("run_repeated");
        assert_eq!((stats.msr_exits, stats.retired), (u32::from(READS), READS));
        assert_eq!(
            stats.result,
            GuestResult::Completed {
                value: Some(SHADOW_VALUE)
            }
        );

        group.throughput(Throughput::Elements(u64::from(READS)));
        group.bench_function(BenchmarkId::new("no_filter", name), |b| {
            b.iter(|| plain.run_repeated(black_box(read), READS, no_exit).unwrap())
        });
        // The same guest and filter, each exit completed by a raw kvm-ioctls loop: the value
        // written straight into the exit, no dispatcher. The dispatcher's run loop against it.
        let mut raw = |exit: &mut VcpuExit<'_>| {
            if let VcpuExit::X86Rdmsr(e) = exit {
                *e.data = SHADOW_VALUE;
                *e.error = 0;
            }
        };
        // Each timed guest entry of one variant follows an untimed entry of the other, in both
        // measurements: a variant measured first (or last) gains nothing from the order, and
        // whatever the host drifts by while one is measured, the other ran through it too.
        let mut run = |dispatcher: bool| {
            let handler: &mut dyn FnMut(&mut VcpuExit<'_>) = if dispatcher {
                &mut to_dispatcher
            } else {
                &mut raw
            };
            denied
                .run_repeated(black_box(read), READS, handler)
                .unwrap()
        };
        for (variant, dispatcher) in [("denied_to_dispatcher", true), ("denied_raw_loop", false)] {
            group.bench_function(BenchmarkId::new(variant, name), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        black_box(run(!dispatcher));
                        let start = Instant::now();
                        black_box(run(dispatcher));
                        timed += start.elapsed();
                    }
                    timed
                })
            });
        }
        if index == 0xc000_0100 {
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new("no_filter_count1", name), |b| {
                b.iter(|| plain.run_repeated(black_box(read), 1, no_exit).unwrap())
            });
        }
        drop(interception);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = exit_storm
}
criterion_main!(benches);
