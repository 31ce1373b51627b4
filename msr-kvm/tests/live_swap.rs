//! Live replacement on the real kernel: two vCPU threads of one VM loop over `rdmsr` of MSRs
//! whose interception changes while an updater replaces the policy 1,000 times. Every exit must
//! reach a handler of the old or the new table that owns its MSR (none mis-routed), no access may
//! end in #GP, and a shadow register both tables share keeps its value.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use common::skip_without_kvm;
use kvm_ioctls::{MsrExitReason, VcpuExit};
use msr_filter_core::{Access, Action, Policy};
use msr_filter_kvm::guest::{GuestResult, GuestVcpu, GuestVm, MsrAccess};
use msr_filter_kvm::handlers::{Constant, Shadow};
use msr_filter_kvm::{Dispatcher, LiveDispatcher, MsrInterception};

/// Intercepted only by table A (KVM handles it in the kernel otherwise).
const SYSENTER_CS: u32 = 0x174;
/// Intercepted only by table B.
const SYSENTER_ESP: u32 = 0x175;
/// Intercepted by both, with the same shadow register.
const SHARED: u32 = 0x4b56_4dff;
const SHARED_VALUE: u64 = 0x1234_5678;

/// What a handler of table `tag` (0xa or 0xb) returns for `msr`: both are visible in the value,
/// so a mis-routed exit shows.
fn tagged(tag: u64, msr: u32) -> u64 {
    tag << 32 | u64::from(msr)
}

fn table(tag: u64, shared: &Arc<Shadow>) -> Dispatcher {
    let msr = if tag == 0xa {
        SYSENTER_CS
    } else {
        SYSENTER_ESP
    };
    Dispatcher::builder(&Policy::<1>::new(Action::Allow))
        .handle(msr, Access::READ, Constant::new(tagged(tag, msr)))
        .unwrap()
        .handle(SHARED, Access::READ_WRITE, Arc::clone(shared))
        .unwrap()
        .build()
        .unwrap()
}

#[derive(Default)]
struct Counts {
    exits: AtomicU64,
    misrouted: AtomicU64,
    faults: AtomicU64,
    guest_gp: AtomicU64,
    accesses: AtomicU64,
}

/// vCPU `v`'s thread: loops of 200 reads of each MSR until `stop`.
fn vcpu_loop(
    vcpu: &mut GuestVcpu,
    v: usize,
    live: &LiveDispatcher<Arc<kvm_ioctls::VmFd>>,
    stop: &AtomicBool,
    counts: &Counts,
) {
    let msrs = [SYSENTER_CS, SHARED, SYSENTER_ESP];
    let mut round = 0usize;
    while !stop.load(Relaxed) || round < 3 {
        let msr = msrs[(round + v) % msrs.len()];
        round += 1;
        live.enter_run(v);
        let stats = vcpu
            .run_repeated(MsrAccess::Read { index: msr }, 200, &mut |exit| {
                live.dispatch(v, exit);
                if let VcpuExit::X86Rdmsr(e) = exit {
                    counts.exits.fetch_add(1, Relaxed);
                    if *e.error != 0 {
                        counts.faults.fetch_add(1, Relaxed);
                    } else {
                        let ok = match e.index {
                            SYSENTER_CS => *e.data == tagged(0xa, SYSENTER_CS),
                            SYSENTER_ESP => *e.data == tagged(0xb, SYSENTER_ESP),
                            SHARED => *e.data == SHARED_VALUE,
                            _ => false,
                        };
                        if !ok || e.reason != MsrExitReason::Filter {
                            counts.misrouted.fetch_add(1, Relaxed);
                        }
                    }
                }
                // The exit is complete: the next thing is KVM_RUN.
                live.enter_run(v);
            })
            .unwrap_or_else(|e| panic!("vCPU {v}: {e}"));
        counts.accesses.fetch_add(u64::from(stats.retired), Relaxed);
        if stats.result == GuestResult::GeneralProtection {
            counts.guest_gp.fetch_add(1, Relaxed);
        }
    }
    live.leave_run(v);
}

#[test]
fn a_thousand_replacements_while_two_vcpus_run() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let mut vcpu1 = g.add_vcpu().unwrap();
    let shared = Arc::new(Shadow::new(2, 0));
    let msrs = MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty()).unwrap();
    let live = LiveDispatcher::new(msrs, 2, table(0xa, &shared)).unwrap();
    // Both vCPUs write the shared register through table A.
    for (v, vcpu) in [(0, g.vcpu()), (1, &mut vcpu1)] {
        live.enter_run(v);
        let out = vcpu
            .run(
                MsrAccess::Write {
                    index: SHARED,
                    value: SHARED_VALUE,
                },
                &mut |exit| {
                    live.dispatch(v, exit);
                },
            )
            .unwrap();
        assert_eq!(out.result, GuestResult::Completed { value: None });
    }

    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let started = Instant::now();
    let mut replacements = 0u64;
    let mut most_retired = 0usize;
    std::thread::scope(|s| {
        let (live, stop, counts) = (&live, &stop, &counts);
        let vcpu0 = g.vcpu();
        s.spawn(move || vcpu_loop(vcpu0, 0, live, stop, counts));
        let vcpu1 = &mut vcpu1;
        s.spawn(move || vcpu_loop(vcpu1, 1, live, stop, counts));
        for i in 0..1000u64 {
            let tag = if i % 2 == 0 { 0xb } else { 0xa };
            let replaced = live.replace(table(tag, &shared)).unwrap();
            most_retired = most_retired.max(replaced.retired);
            replacements += 1;
        }
        stop.store(true, Relaxed);
    });
    let elapsed = started.elapsed();

    let exits = counts.exits.load(Relaxed);
    println!(
        "live swap: {replacements} replacements in {elapsed:?}; {} guest reads, {exits} exits \
         handled, {} mis-routed, {} faults, {} #GP in the guest; at most {most_retired} retired \
         tables alive after a replacement",
        counts.accesses.load(Relaxed),
        counts.misrouted.load(Relaxed),
        counts.faults.load(Relaxed),
        counts.guest_gp.load(Relaxed),
    );
    assert_eq!(replacements, 1000);
    assert!(exits > 0, "the guests took no exit");
    assert_eq!(counts.misrouted.load(Relaxed), 0, "mis-routed exits");
    assert_eq!(counts.faults.load(Relaxed), 0, "exits completed with #GP");
    assert_eq!(counts.guest_gp.load(Relaxed), 0, "#GP in a guest");
    assert_eq!(shared.values(), [SHARED_VALUE, SHARED_VALUE]);
    assert_eq!(live.generation(), 1001);
    // Both vCPUs left: nothing retired stays.
    assert_eq!(live.reclaim(), 0);
    assert!(live.lagging_vcpus().is_empty());
}

/// A vCPU inside `KVM_RUN` (or holding an exit) since before a replacement delays the freeing of
/// the old table, never the replacement; once it passes a quiescent point, it is freed.
#[test]
fn a_lagging_vcpu_delays_reclamation_not_replacement() {
    if skip_without_kvm() {
        return;
    }
    let g = GuestVm::new().unwrap();
    let shared = Arc::new(Shadow::new(2, 0));
    let msrs = MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty()).unwrap();
    let live = LiveDispatcher::new(msrs, 2, table(0xa, &shared)).unwrap();
    live.enter_run(1); // vCPU 1 "inside KVM_RUN" at generation 1
    let replaced = live.replace(table(0xb, &shared)).unwrap();
    assert_eq!(replaced.generation, 2);
    assert_eq!(replaced.retired, 1, "table A kept for vCPU 1");
    assert_eq!(live.lagging_vcpus(), [1]);
    // An exit vCPU 1 got from filter A is still served by table A.
    let (mut data, mut error) = (0, 1);
    live.dispatch_msr(
        1,
        msr_filter_core::AccessType::Read,
        MsrExitReason::Filter,
        SYSENTER_CS,
        &mut data,
        &mut error,
    );
    assert_eq!((data, error), (tagged(0xa, SYSENTER_CS), 0));
    // vCPU 0, which entered after the replacement, sees only table B: SYSENTER_CS has no
    // handler there, so an exit for it (which filter B cannot produce) fails closed.
    live.enter_run(0);
    live.dispatch_msr(
        0,
        msr_filter_core::AccessType::Read,
        MsrExitReason::Filter,
        SYSENTER_CS,
        &mut data,
        &mut error,
    );
    assert_eq!(error, 1);
    let replaced = live.replace(table(0xa, &shared)).unwrap();
    assert_eq!(
        replaced.retired, 2,
        "vCPU 1 holds generation 1, vCPU 0 generation 2"
    );
    assert_eq!(live.lagging_vcpus(), [0, 1]);
    live.enter_run(1);
    assert_eq!(live.reclaim(), 1, "vCPU 0 still holds generation 2");
    live.leave_run(0);
    assert_eq!(live.reclaim(), 0);
    assert!(live.lagging_vcpus().is_empty());
}

/// Replacing with "no filter" removes filtering; a later replacement that needs FILTER exits
/// again (and UNKNOWN, for its route) enables them before installing.
#[test]
fn replacing_with_no_filter_and_back_keeps_the_ordering_rule() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let shared = Arc::new(Shadow::new(1, 0));
    let msrs = MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty()).unwrap();
    let live = LiveDispatcher::new(msrs, 1, table(0xa, &shared)).unwrap();
    let none = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
        .build()
        .unwrap();
    assert!(none.filter().is_unfiltered());
    live.replace(none).unwrap();
    live.enter_run(0);
    // No filter: KVM handles SYSENTER_CS itself.
    let out = g
        .run(MsrAccess::Read { index: SYSENTER_CS }, &mut |exit| {
            live.dispatch(0, exit);
        })
        .unwrap();
    assert!(out.exit.is_none(), "{out:?}");
    // Back to a filter, with UNKNOWN exits routed to a value.
    let next = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
        .handle(SYSENTER_CS, Access::READ, Constant::new(7))
        .unwrap()
        .ignore_unknown_msrs()
        .build()
        .unwrap();
    assert_eq!(
        next.exit_reasons(),
        MsrExitReason::Filter | MsrExitReason::Unknown
    );
    live.replace(next).unwrap();
    live.enter_run(0);
    let out = g
        .run(MsrAccess::Read { index: SYSENTER_CS }, &mut |exit| {
            live.dispatch(0, exit);
        })
        .unwrap();
    assert_eq!(out.result, GuestResult::Completed { value: Some(7) });
    live.enter_run(0);
    let out = g
        .run(MsrAccess::Read { index: 0x474f_4f00 }, &mut |exit| {
            live.dispatch(0, exit);
        })
        .unwrap();
    assert_eq!(
        out.result,
        GuestResult::Completed { value: Some(0) },
        "an unknown MSR read as 0 through the UNKNOWN route: {out:?}"
    );
    let msrs = live.into_interception();
    assert!(msrs.exit_reasons().contains(MsrExitReason::Unknown));
}

/// A vCPU spinning inside `KVM_RUN` holds back the freeing of the table it entered with; a
/// kick (`kick::VcpuKicker`) interrupts its `KVM_RUN`, it passes its quiescent point, and the
/// table is freed.
#[test]
fn a_kick_lets_a_vcpu_spinning_in_kvm_run_pass_its_quiescent_point() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let shared = Arc::new(Shadow::new(1, 0));
    let msrs = MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty()).unwrap();
    let live = LiveDispatcher::new(msrs, 1, table(0xa, &shared)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let live = &live;
        let vcpu = g.vcpu();
        let spinner = s.spawn(move || {
            let (kicker, guard) =
                msr_filter_kvm::kick::VcpuKicker::for_current_thread(libc::SIGUSR2).unwrap();
            live.enter_run(0);
            tx.send(kicker).unwrap();
            vcpu.run_until_interrupted().unwrap();
            // Back from KVM_RUN: the quiescent point.
            live.enter_run(0);
            live.leave_run(0);
            drop(guard);
        });
        let kicker = rx.recv().unwrap();
        let replaced = live.replace(table(0xb, &shared)).unwrap();
        assert_eq!(replaced.retired, 1, "the spinning vCPU holds table A");
        assert_eq!(live.lagging_vcpus(), [0]);
        // The replacement did not wait for it; now kick it until it has left KVM_RUN.
        let started = Instant::now();
        while !spinner.is_finished() {
            assert!(kicker.kick().is_ok());
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert!(
                started.elapsed().as_secs() < 10,
                "the kick did not interrupt KVM_RUN"
            );
        }
        spinner.join().unwrap();
        assert!(
            !kicker.kick().unwrap(),
            "a kicker does nothing once its thread is gone"
        );
    });
    assert_eq!(live.reclaim(), 0);
    assert!(live.lagging_vcpus().is_empty());
}
