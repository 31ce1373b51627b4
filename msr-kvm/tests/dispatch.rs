//! `Dispatcher` on the real kernel: registering a handler intercepts its MSR, built-in handlers
//! complete the exits, unhandled exits fail closed, routes and counters.

mod common;

use std::sync::Arc;

use common::*;
use kvm_ioctls::{MsrExitReason, VcpuExit};
use msr_filter_core::{Access, AccessType, Action, Policy};
use msr_filter_kvm::guest::{GuestResult, GuestVm, MsrAccess};
use msr_filter_kvm::handlers::{Constant, Counting, OnWrite, ReadOnly, Shadow, WriteIgnore};
use msr_filter_kvm::{
    BuildError, Dispatch, Dispatcher, ExitRoute, HandlerStats, MsrInterception, RouteMsrStats,
    RouteStats,
};

const GP: GuestResult = GuestResult::GeneralProtection;
const CORE_THREAD_COUNT: u32 = 0x35;
const PRED_CMD: u32 = 0x49;
const HV_FIRST: u32 = 0x4000_0000;
const HV_LAST: u32 = 0x4000_00ff;
const RO_GP: u32 = NON_EXISTENT;
const RO_IGNORE: u32 = NON_EXISTENT + 1;

/// What `dispatch` must report for an exit of `access` ending in `result`.
fn msr_dispatch(access: MsrAccess, result: GuestResult) -> Option<Dispatch> {
    let (index, write) = match access {
        MsrAccess::Read { index } => (index, false),
        MsrAccess::Write { index, .. } => (index, true),
    };
    Some(Dispatch::Msr {
        index,
        write,
        fault: result == GP,
    })
}

fn default_allow() -> Policy<4> {
    Policy::new(Action::Allow)
}

#[test]
fn registered_handlers_intercept_and_complete() {
    if skip_without_kvm() {
        return;
    }
    let shadow = Arc::new(Shadow::new(2, 0x11));
    let counting = Arc::new(Counting::new(Shadow::new(1, 0)));
    let d = Dispatcher::builder(&default_allow())
        .handle(CORE_THREAD_COUNT, Access::READ, Constant::new(0x0001_0001))
        .unwrap()
        .handle(TSC_AUX, Access::READ_WRITE, shadow.clone())
        .unwrap()
        .handle(
            RO_GP,
            Access::READ_WRITE,
            ReadOnly::new(Constant::new(0xabc), OnWrite::Gp),
        )
        .unwrap()
        .handle(
            RO_IGNORE,
            Access::READ_WRITE,
            ReadOnly::new(Constant::new(0xdef), OnWrite::Ignore),
        )
        .unwrap()
        .handle(PRED_CMD, Access::WRITE, WriteIgnore)
        .unwrap()
        .handle(HV_FIRST..=HV_LAST, Access::READ_WRITE, counting.clone())
        .unwrap()
        .build()
        .unwrap();
    // Registering is intercepting: exactly the handled accesses are denied.
    let f = d.filter();
    assert!(f.lints().is_empty());
    for (index, access, action) in [
        (CORE_THREAD_COUNT, AccessType::Read, Action::Deny),
        (CORE_THREAD_COUNT, AccessType::Write, Action::Allow),
        (PRED_CMD, AccessType::Write, Action::Deny),
        (PRED_CMD, AccessType::Read, Action::Allow),
        (TSC_AUX, AccessType::Read, Action::Deny),
        (TSC_AUX, AccessType::Write, Action::Deny),
        (HV_FIRST - 1, AccessType::Read, Action::Allow),
        (HV_FIRST, AccessType::Write, Action::Deny),
        (HV_LAST, AccessType::Read, Action::Deny),
        (HV_LAST + 1, AccessType::Read, Action::Allow),
        (RO_GP, AccessType::Write, Action::Deny),
        (RO_IGNORE, AccessType::Read, Action::Deny),
        (RO_IGNORE + 1, AccessType::Read, Action::Allow),
        (FS_BASE, AccessType::Read, Action::Allow),
    ] {
        assert_eq!(f.decide(index, access), action, "{index:#x} {access}");
    }

    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::Unknown).unwrap();
    assert!(msrs.install(d.filter()).unwrap().is_empty());

    let filter = MsrExitReason::Filter;
    // (vCPU, access, exit reason or None, what the guest sees)
    let steps: Vec<(usize, MsrAccess, Option<MsrExitReason>, GuestResult)> = vec![
        (0, rd(CORE_THREAD_COUNT), Some(filter), read_ok(0x0001_0001)),
        // Only reads are handled: the write is allowed, unknown to KVM, and the UNKNOWN route
        // defaults to #GP.
        (
            0,
            wr(CORE_THREAD_COUNT, 1),
            Some(MsrExitReason::Unknown),
            GP,
        ),
        // Shadow: per vCPU.
        (0, rd(TSC_AUX), Some(filter), read_ok(0x11)),
        (0, wr(TSC_AUX, 5), Some(filter), WRITE_OK),
        (1, wr(TSC_AUX, 9), Some(filter), WRITE_OK),
        (0, rd(TSC_AUX), Some(filter), read_ok(5)),
        (1, rd(TSC_AUX), Some(filter), read_ok(9)),
        (2, rd(TSC_AUX), Some(filter), GP),
        // ReadOnly.
        (0, rd(RO_GP), Some(filter), read_ok(0xabc)),
        (0, wr(RO_GP, 1), Some(filter), GP),
        (0, rd(RO_IGNORE), Some(filter), read_ok(0xdef)),
        (0, wr(RO_IGNORE, 1), Some(filter), WRITE_OK),
        (0, rd(RO_IGNORE), Some(filter), read_ok(0xdef)),
        // WriteIgnore for writes of PRED_CMD: the IBPB never happens, the guest sees success.
        (0, wr(PRED_CMD, 1), Some(filter), WRITE_OK),
        // Counting(Shadow) over a range: one register for the whole range.
        (0, wr(HV_FIRST + 0x10, 7), Some(filter), WRITE_OK),
        (0, rd(HV_FIRST + 0x20), Some(filter), read_ok(7)),
        (0, rd(HV_LAST), Some(filter), read_ok(7)),
        // Not intercepted: handled in the kernel.
        (0, rd(FS_BASE), None, read_ok(0)),
    ];
    for (vcpu, access, reason, result) in steps {
        let (outcome, dispatch) = run_as(&mut g, &d, vcpu, access);
        println!("vCPU {vcpu}: {access:x?} -> {outcome:x?}");
        let want = match reason {
            Some(reason) => exited(reason, access, result),
            None => no_exit(result),
        };
        assert_eq!(outcome, want, "vCPU {vcpu}: {access:x?}");
        let want_dispatch = reason.and_then(|_| msr_dispatch(access, result));
        assert_eq!(dispatch, want_dispatch, "vCPU {vcpu}: {access:x?}");
    }
    assert_eq!(
        (shadow.value(0), shadow.value(1), shadow.value(2)),
        (Some(5), Some(9), None)
    );
    assert_eq!(counting.counts(), (2, 1));

    let stat = |first, last, name, access, kind, (reads, writes, faults)| HandlerStats {
        first,
        last,
        name,
        access,
        kind,
        reads,
        writes,
        faults,
    };
    assert_eq!(
        d.handler_stats(),
        vec![
            stat(
                CORE_THREAD_COUNT,
                CORE_THREAD_COUNT,
                Some("CORE_THREAD_COUNT"),
                Access::READ,
                "constant",
                (1, 0, 0)
            ),
            stat(
                PRED_CMD,
                PRED_CMD,
                Some("IA32_PRED_CMD"),
                Access::WRITE,
                "write-ignore",
                (0, 1, 0)
            ),
            stat(
                HV_FIRST,
                HV_LAST,
                None,
                Access::READ_WRITE,
                "counting",
                (2, 1, 0)
            ),
            stat(
                RO_GP,
                RO_GP,
                None,
                Access::READ_WRITE,
                "read-only",
                (1, 1, 1)
            ),
            stat(
                RO_IGNORE,
                RO_IGNORE,
                None,
                Access::READ_WRITE,
                "read-only",
                (2, 1, 0)
            ),
            stat(
                TSC_AUX,
                TSC_AUX,
                Some("TSC_AUX"),
                Access::READ_WRITE,
                "shadow",
                (4, 2, 1)
            ),
        ]
    );
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 1,
            inval: 0,
            unhandled: 0,
            faults: 1,
            untracked: 0
        }
    );

    // Reads of PRED_CMD are not intercepted: the kernel has no read for this write-only
    // command MSR and exits UNKNOWN (observed on Linux 6.18), not FILTER.
    let r = run_failing(&mut g, rd(PRED_CMD));
    println!("PRED_CMD read, not intercepted: {r:x?}");
    assert_eq!(r, exited(MsrExitReason::Unknown, rd(PRED_CMD), GP));
}

#[test]
fn unhandled_filter_exit_fails_closed_raw_loop_fails_open() {
    if skip_without_kvm() {
        return;
    }
    // The policy denies TSC_AUX, but nobody emulates it.
    let policy: Policy<4> = Policy::parse("default allow\ndeny rw TSC_AUX\n").unwrap();
    let d = Dispatcher::builder(&policy).build().unwrap();
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    msrs.install(d.filter()).unwrap();
    let filter = MsrExitReason::Filter;
    for (access, open) in [(rd(TSC_AUX), read_ok(0)), (wr(TSC_AUX, 0x77), WRITE_OK)] {
        let (closed, dispatch) = run_as(&mut g, &d, 0, access);
        let raw = g.run_raw(access).unwrap();
        println!("{access:x?}: dispatcher -> {closed:x?}; raw loop -> {raw:x?}");
        assert_eq!(closed, exited(filter, access, GP));
        assert_eq!(dispatch, msr_dispatch(access, GP));
        assert_eq!(raw, exited(filter, access, open));
    }
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 0,
            inval: 0,
            unhandled: 2,
            faults: 2,
            untracked: 0
        }
    );
    assert!(d.handler_stats().is_empty());
}

#[test]
fn unknown_and_inval_exits_follow_their_routes() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(
        g.kvm(),
        vm_handle(&g),
        MsrExitReason::Unknown | MsrExitReason::Inval,
    )
    .unwrap();
    let unknown = MsrExitReason::Unknown;
    let seq = [rd(NON_EXISTENT), wr(NON_EXISTENT, 5), rd(NON_EXISTENT)];

    let cases: [(&str, Dispatcher, [GuestResult; 3], RouteStats); 3] = [
        (
            "default (#GP)",
            Dispatcher::builder(&default_allow()).build().unwrap(),
            [GP, GP, GP],
            RouteStats {
                unknown: 3,
                inval: 0,
                unhandled: 0,
                faults: 3,
                untracked: 0,
            },
        ),
        (
            "Value(7)",
            Dispatcher::builder(&default_allow())
                .on_unknown(ExitRoute::Value(7))
                .build()
                .unwrap(),
            [read_ok(7), WRITE_OK, read_ok(7)],
            RouteStats {
                unknown: 3,
                inval: 0,
                unhandled: 0,
                faults: 0,
                untracked: 0,
            },
        ),
        (
            "ignore_unknown_msrs",
            Dispatcher::builder(&default_allow())
                .ignore_unknown_msrs()
                .build()
                .unwrap(),
            [read_ok(0), WRITE_OK, read_ok(0)],
            RouteStats {
                unknown: 3,
                inval: 0,
                unhandled: 0,
                faults: 0,
                untracked: 0,
            },
        ),
    ];
    for (name, d, results, stats) in cases {
        // A default-allow policy with no handler packs to "no filter".
        assert!(d.filter().is_unfiltered(), "{name}");
        msrs.install(d.filter()).unwrap();
        assert!(!msrs.filter_installed());
        for (access, result) in seq.into_iter().zip(results) {
            let (outcome, dispatch) = run_as(&mut g, &d, 0, access);
            assert_eq!(
                outcome,
                exited(unknown, access, result),
                "{name}: {access:x?}"
            );
            assert_eq!(
                dispatch,
                msr_dispatch(access, result),
                "{name}: {access:x?}"
            );
        }
        // Known MSRs never reach the route.
        assert_eq!(
            run_as(&mut g, &d, 0, rd(FS_BASE)),
            (no_exit(read_ok(0)), None)
        );
        assert_eq!(d.route_stats(), stats, "{name}");
        // Each unknown MSR is counted on its own.
        assert_eq!(
            d.route_msr_stats(),
            vec![RouteMsrStats {
                index: NON_EXISTENT,
                name: None,
                reads: 2,
                writes: 1
            }],
            "{name}"
        );
    }

    // INVAL (x2APIC without an in-kernel LAPIC) has its own route.
    let d = Dispatcher::builder(&default_allow())
        .on_inval(ExitRoute::Value(0x55))
        .build()
        .unwrap();
    let (outcome, _) = run_as(&mut g, &d, 0, rd(X2APIC_TPR));
    assert_eq!(
        outcome,
        exited(MsrExitReason::Inval, rd(X2APIC_TPR), read_ok(0x55))
    );
    let (outcome, _) = run_as(&mut g, &d, 0, rd(NON_EXISTENT));
    assert_eq!(outcome, exited(unknown, rd(NON_EXISTENT), GP));
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 1,
            inval: 1,
            unhandled: 0,
            faults: 1,
            untracked: 0
        }
    );
}

#[test]
fn build_refuses_x2apic_and_overlapping_handlers() {
    let b = || Dispatcher::builder(&default_allow());
    let c = || Constant::new(1);
    for (first, last) in [
        (0x800, 0x800),
        (0x8ff, 0x8ff),
        (0x7ff, 0x800),
        (0x8ff, 0x900),
        (0x0, 0xffff_ffff),
    ] {
        assert_eq!(
            b().handle(first..=last, Access::READ, c()).err(),
            Some(BuildError::X2apic { first, last }),
            "{first:#x}-{last:#x}"
        );
    }
    // Right next to the x2APIC MSRs is fine.
    let d = b()
        .handle(0x7ff, Access::READ_WRITE, c())
        .unwrap()
        .handle(0x900, Access::READ_WRITE, c())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(d.filter().decide(0x7ff, AccessType::Read), Action::Deny);
    assert_eq!(d.filter().decide(0x900, AccessType::Write), Action::Deny);

    let reads = b().handle(0x10..=0x20, Access::READ, c()).unwrap();
    assert_eq!(
        reads.handle(0x20..=0x30, Access::READ_WRITE, c()).err(),
        Some(BuildError::Overlap {
            index: 0x20,
            access: AccessType::Read
        })
    );
    // Same MSRs, other access: no overlap. Then a third overlapping both.
    let both = b()
        .handle(0x10..=0x20, Access::READ, c())
        .unwrap()
        .handle(0x15, Access::WRITE, c())
        .unwrap();
    assert_eq!(
        both.handle(0x15..=0x16, Access::WRITE, c()).err(),
        Some(BuildError::Overlap {
            index: 0x15,
            access: AccessType::Write
        })
    );
    // A reversed span is what this checks.
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 0x20..=0x10;
    assert_eq!(
        b().handle(reversed, Access::READ, c()).err(),
        Some(BuildError::BadRange {
            first: 0x20,
            last: 0x10
        })
    );
    assert_eq!(
        b().handle(0x20, Access::empty(), c()).err(),
        Some(BuildError::BadRange {
            first: 0x20,
            last: 0x20
        })
    );
    let msg = BuildError::X2apic {
        first: 0x800,
        last: 0x800,
    }
    .to_string();
    assert!(msg.contains("never filters"), "{msg}");
}

#[test]
fn non_msr_exit_is_left_alone() {
    let counting = Arc::new(Counting::new(Constant::new(1)));
    let d = Dispatcher::builder(&default_allow())
        .handle(TSC_AUX, Access::READ_WRITE, counting.clone())
        .unwrap()
        .build()
        .unwrap();
    let mut hlt = VcpuExit::Hlt;
    assert_eq!(d.dispatch(0, &mut hlt), Dispatch::NotMsr);
    let mut io = VcpuExit::IoOut(0x10, &[13]);
    assert_eq!(d.dispatch(0, &mut io), Dispatch::NotMsr);
    assert_eq!(counting.counts(), (0, 0));
    assert_eq!(d.route_stats(), RouteStats::default());
    let s = d.handler_stats();
    assert_eq!((s[0].reads, s[0].writes, s[0].faults), (0, 0, 0));
}

/// No fixed cap on handlers: 2,000 single-MSR handlers (more than any former rule capacity)
/// register and each routes its own exits, as long as the filter fits the kernel's 16 ranges.
#[test]
fn thousands_of_handlers_register_and_route() {
    let mut b = Dispatcher::builder(&default_allow());
    for i in 0..2000u32 {
        b = b
            .handle(0x4000_0000 + i, Access::READ, Constant::new(u64::from(i)))
            .unwrap();
    }
    let d = b.build().unwrap();
    assert_eq!(d.filter().range_count(), 1);
    for i in [0u32, 1, 999, 1999] {
        let (mut data, mut error) = (0u64, 1u8);
        d.dispatch_msr(
            0,
            AccessType::Read,
            MsrExitReason::Filter,
            0x4000_0000 + i,
            &mut data,
            &mut error,
        );
        assert_eq!((data, error), (u64::from(i), 0));
    }
}

/// 65,536 single-MSR handlers (each MSR its own handler, interleaved reads and writes over 32
/// pages) register, pack into the kernel's limit and route every exit to its own handler.
#[test]
fn sixty_five_thousand_handlers() {
    let mut b = Dispatcher::builder(&default_allow());
    for i in 0..65_536u32 {
        let access = if i % 2 == 0 {
            Access::READ
        } else {
            Access::WRITE
        };
        b = b
            .handle(0x4000_0000 + i, access, Constant::new(u64::from(i)))
            .unwrap();
    }
    let d = b.build().unwrap();
    assert!(d.filter().range_count() <= 16, "{:?}", d.filter());
    for i in [0u32, 2, 4096, 65_534] {
        let (mut data, mut error) = (0u64, 1u8);
        d.dispatch_msr(
            0,
            AccessType::Read,
            MsrExitReason::Filter,
            0x4000_0000 + i,
            &mut data,
            &mut error,
        );
        assert_eq!((data, error), (u64::from(i), 0), "{i}");
    }
    // A write to a read handler's MSR has no handler: #GP.
    let (mut data, mut error) = (0u64, 0u8);
    d.dispatch_msr(
        0,
        AccessType::Write,
        MsrExitReason::Filter,
        0x4000_0000,
        &mut data,
        &mut error,
    );
    assert_eq!(error, 1);
    assert_eq!(d.handler_stats().len(), 65_536);
}
