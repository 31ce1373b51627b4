//! The scenarios of Linux's `tools/testing/selftests/kvm/x86/userspace_msr_exit_test.c`, driven
//! through msr-filter's API (policy text -> `Policy::pack` -> `Dispatcher` / `MsrInterception`)
//! on the real kernel, one guest access at a time.

mod common;

use std::sync::Arc;

use common::*;
use kvm_ioctls::MsrExitReason;
use msr_filter_core::{abi, Access, Action, Filter, InvalidFilter, Policy, RawFilter, RawRange};
use msr_filter_kvm::guest::{GuestResult, GuestVm, MsrAccess, Outcome};
use msr_filter_kvm::{
    handlers, Dispatch, Dispatcher, ExitRoute, Fault, HandlerStats, MsrContext, MsrHandler,
    MsrInterception, RouteStats,
};

const GP: GuestResult = GuestResult::GeneralProtection;

fn parse(text: &str) -> Policy<16> {
    Policy::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// IA32_XSS as the selftest's VMM emulates it: reads 0, writes of anything but 0 are #GP.
struct Xss;

impl MsrHandler for Xss {
    fn read(&self, _: &MsrContext) -> Result<u64, Fault> {
        Ok(0)
    }
    fn write(&self, _: &MsrContext, value: u64) -> Result<(), Fault> {
        if value == 0 {
            Ok(())
        } else {
            Err(Fault)
        }
    }
}

/// IA32_FLUSH_CMD as the selftest's VMM emulates it: reads are #GP, writes of anything but 1 too.
struct FlushCmd;

impl MsrHandler for FlushCmd {
    fn read(&self, _: &MsrContext) -> Result<u64, Fault> {
        Err(Fault)
    }
    fn write(&self, _: &MsrContext, value: u64) -> Result<(), Fault> {
        if value == 1 {
            Ok(())
        } else {
            Err(Fault)
        }
    }
}

/// The selftest's `filter_deny` VMM: reads return the MSR's index, writes are accepted.
struct Echo;

impl MsrHandler for Echo {
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        Ok(u64::from(ctx.index))
    }
    fn write(&self, _: &MsrContext, _: u64) -> Result<(), Fault> {
        Ok(())
    }
}

/// Refuses everything.
struct Refuse;

impl MsrHandler for Refuse {
    fn read(&self, _: &MsrContext) -> Result<u64, Fault> {
        Err(Fault)
    }
    fn write(&self, _: &MsrContext, _: u64) -> Result<(), Fault> {
        Err(Fault)
    }
}

fn stats(
    first: u32,
    name: Option<&'static str>,
    kind: &'static str,
    (reads, writes, faults): (u64, u64, u64),
) -> HandlerStats {
    HandlerStats {
        first,
        last: first,
        name,
        access: Access::READ_WRITE,
        kind,
        reads,
        writes,
        faults,
    }
}

#[test]
fn filter_allow() {
    if skip_without_kvm() {
        return;
    }
    let policy = parse(
        "default allow\n\
         deny rw IA32_XSS        # known to KVM\n\
         deny rw IA32_FLUSH_CMD\n\
         deny rw 0x474f4f00      # known to nobody\n",
    );
    let packed = policy.pack().unwrap();
    assert_eq!(packed.filter.range_count(), 2, "{}", packed.filter);
    assert_eq!(packed.filter.bitmap_bytes(), 416, "{}", packed.filter);
    assert!(packed.proven_minimal);

    let shadow = Arc::new(handlers::Shadow::new(1, 0));
    let d = Dispatcher::builder(&policy)
        .handle(XSS, Access::READ_WRITE, Xss)
        .unwrap()
        .handle(FLUSH_CMD, Access::READ_WRITE, FlushCmd)
        .unwrap()
        .handle(NON_EXISTENT, Access::READ_WRITE, shadow.clone())
        .unwrap()
        .build()
        .unwrap();
    // The handlers intercept exactly what the policy denies: the same filter.
    assert_eq!(d.filter(), &packed.filter);

    let mut g = GuestVm::new().unwrap();
    // Like the selftest: only the FILTER reason.
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    assert!(msrs.install(d.filter()).unwrap().is_empty());

    // guest_code_filter_allow, step by step: (access, what the guest must see).
    let steps: [(MsrAccess, GuestResult); 8] = [
        (rd(XSS), read_ok(0)),
        (wr(XSS, 0), WRITE_OK),
        (wr(XSS, 1), GP),
        (rd(FLUSH_CMD), GP),
        (wr(FLUSH_CMD, 0), GP),
        (wr(FLUSH_CMD, 1), WRITE_OK),
        (wr(NON_EXISTENT, 2), WRITE_OK),
        (rd(NON_EXISTENT), read_ok(2)),
    ];
    for (access, result) in steps {
        let (outcome, dispatch) = run_as(&mut g, &d, 0, access);
        println!("{access:x?} -> {outcome:x?}");
        assert_eq!(
            outcome,
            exited(MsrExitReason::Filter, access, result),
            "{access:x?}"
        );
        let (index, write) = match access {
            MsrAccess::Read { index } => (index, false),
            MsrAccess::Write { index, .. } => (index, true),
        };
        assert_eq!(
            dispatch,
            Some(Dispatch::Msr {
                index,
                write,
                fault: result == GP
            })
        );
    }
    assert_eq!(shadow.value(0), Some(2));
    assert_eq!(
        d.handler_stats(),
        vec![
            stats(FLUSH_CMD, Some("IA32_FLUSH_CMD"), "custom", (1, 2, 2)),
            stats(XSS, Some("IA32_XSS"), "custom", (1, 2, 1)),
            stats(NON_EXISTENT, None, "shadow", (1, 1, 0)),
        ]
    );
    assert_eq!(d.route_stats(), RouteStats::default());

    // Unfiltered, nothing exits (only FILTER is enabled): the fabricated MSR is a plain #GP.
    msrs.remove_filter().unwrap();
    assert_eq!(run_failing(&mut g, rd(NON_EXISTENT)), no_exit(GP));
    assert_eq!(run_failing(&mut g, wr(NON_EXISTENT, 2)), no_exit(GP));
    for access in [rd(XSS), rd(FLUSH_CMD)] {
        let r = run_failing(&mut g, access);
        assert_eq!(r.exit, None, "{access:x?} -> {r:?}");
    }
}

#[test]
fn filter_deny() {
    if skip_without_kvm() {
        return;
    }
    let policy = parse(
        "default deny\n\
         allow rw 0x0+0x3000\n\
         deny  w  0x1fc            # POWER_CTL\n\
         allow rw 0x40000000+0x3000\n\
         allow rw 0xc0000000+0x3000\n\
         deny  r  0xc0000084       # SYSCALL_MASK\n\
         deny  r  0xc0000101       # GS_BASE\n\
         allow rw 0xdeadbeef\n",
    );
    let packed = policy.pack().unwrap();
    println!("{}", packed.filter);
    assert_eq!(packed.filter.range_count(), 6);
    assert_eq!(packed.filter.bitmap_bytes(), 4640);
    assert_eq!(packed.filter.default_action(), Action::Deny);

    let echo: Arc<dyn MsrHandler> = Arc::new(Echo);
    let d = Dispatcher::builder(&policy)
        .on_unhandled(ExitRoute::Handler(echo.clone()))
        .on_unknown(ExitRoute::Handler(echo))
        .build()
        .unwrap();
    assert_eq!(d.filter(), &packed.filter);

    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(
        g.kvm(),
        vm_handle(&g),
        MsrExitReason::Unknown | MsrExitReason::Inval,
    )
    .unwrap();
    assert_eq!(msrs.exit_reasons(), MsrExitReason::all());
    assert!(msrs.install(d.filter()).unwrap().is_empty());

    let filter = MsrExitReason::Filter;
    let unknown = MsrExitReason::Unknown;
    // guest_msr_calls(trapped = true)
    let trapped: [(MsrAccess, Outcome); 7] = [
        // Allowed and known: the kernel handles it.
        (wr(SYSCALL_MASK, 0), no_exit(WRITE_OK)),
        (
            rd(SYSCALL_MASK),
            exited(filter, rd(SYSCALL_MASK), read_ok(u64::from(SYSCALL_MASK))),
        ),
        (
            rd(GS_BASE),
            exited(filter, rd(GS_BASE), read_ok(u64::from(GS_BASE))),
        ),
        (
            wr(POWER_CTL, 0x1234),
            exited(filter, wr(POWER_CTL, 0x1234), WRITE_OK),
        ),
        // Reads of POWER_CTL are allowed; the filtered write never reached the kernel.
        (rd(POWER_CTL), no_exit(read_ok(0))),
        // Allowed by the filter, unknown to KVM.
        (
            rd(DEADBEEF),
            exited(unknown, rd(DEADBEEF), read_ok(u64::from(DEADBEEF))),
        ),
        (
            wr(DEADBEEF, 0x1234),
            exited(unknown, wr(DEADBEEF, 0x1234), WRITE_OK),
        ),
    ];
    for (access, want) in trapped {
        let (outcome, _) = run_as(&mut g, &d, 0, access);
        println!("filtered: {access:x?} -> {outcome:x?}");
        assert_eq!(outcome, want, "filtered: {access:x?}");
    }
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 2,
            inval: 0,
            unhandled: 3,
            faults: 0,
            untracked: 0
        }
    );
    // Default deny covers what no range does; x2APIC MSRs are never filtered (INVAL here: no
    // in-kernel LAPIC), and the INVAL route defaults to #GP.
    let (outcome, _) = run_as(&mut g, &d, 0, rd(0x3000));
    assert_eq!(outcome, exited(filter, rd(0x3000), read_ok(0x3000)));
    let (outcome, _) = run_as(&mut g, &d, 0, rd(X2APIC_TPR));
    assert_eq!(outcome, exited(MsrExitReason::Inval, rd(X2APIC_TPR), GP));
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 2,
            inval: 1,
            unhandled: 4,
            faults: 1,
            untracked: 0
        }
    );

    // GUEST_SYNC: the VMM removes the filter; guest_msr_calls(trapped = false).
    msrs.remove_filter().unwrap();
    let untrapped: [(MsrAccess, Outcome); 7] = [
        (wr(SYSCALL_MASK, 0), no_exit(WRITE_OK)),
        (rd(SYSCALL_MASK), no_exit(read_ok(0))),
        (rd(GS_BASE), no_exit(read_ok(0))),
        (wr(POWER_CTL, 0x1234), no_exit(WRITE_OK)),
        (rd(POWER_CTL), no_exit(read_ok(0x1234))),
        (
            rd(DEADBEEF),
            exited(unknown, rd(DEADBEEF), read_ok(u64::from(DEADBEEF))),
        ),
        (
            wr(DEADBEEF, 0x1234),
            exited(unknown, wr(DEADBEEF, 0x1234), WRITE_OK),
        ),
    ];
    for (access, want) in untrapped {
        let (outcome, _) = run_as(&mut g, &d, 0, access);
        println!("unfiltered: {access:x?} -> {outcome:x?}");
        assert_eq!(outcome, want, "unfiltered: {access:x?}");
    }
    // Three FILTER exits fewer than the first round; the two UNKNOWN ones remain.
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 4,
            inval: 1,
            unhandled: 4,
            faults: 1,
            untracked: 0
        }
    );
}

#[test]
fn fs_gs_base_filters_swap() {
    if skip_without_kvm() {
        return;
    }
    let dispatcher = |index: u32| {
        Dispatcher::builder(&Policy::<1>::new(Action::Allow))
            .handle(
                index,
                Access::READ,
                handlers::Constant::new(u64::from(index)),
            )
            .unwrap()
            .build()
            .unwrap()
    };
    let d_fs = dispatcher(FS_BASE);
    let d_gs = dispatcher(GS_BASE);
    // The selftest's filter_fs / filter_gs: one range, one word of bitmap.
    for (d, text) in [
        (&d_fs, "default allow\ndeny r FS_BASE\n"),
        (&d_gs, "default allow\ndeny r GS_BASE\n"),
    ] {
        let packed = parse(text).pack().unwrap();
        assert_eq!(packed.filter.range_count(), 1);
        assert_eq!(packed.filter.bitmap_bytes(), 8);
        assert_eq!(d.filter(), &packed.filter, "{text}");
    }

    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    let filter = MsrExitReason::Filter;
    let fs = u64::from(FS_BASE);
    let gs = u64::from(GS_BASE);

    // guest_code_permission_bitmap, first half: FS_BASE reads exit, GS_BASE reads do not.
    msrs.install(d_fs.filter()).unwrap();
    assert_eq!(
        run_as(&mut g, &d_fs, 0, rd(FS_BASE)).0,
        exited(filter, rd(FS_BASE), read_ok(fs))
    );
    assert_eq!(run_as(&mut g, &d_fs, 0, rd(GS_BASE)).0, no_exit(read_ok(0)));
    // Writes are not filtered.
    assert_eq!(
        run_as(&mut g, &d_fs, 0, wr(FS_BASE, 0)).0,
        no_exit(WRITE_OK)
    );

    // GUEST_SYNC: swap the filter.
    msrs.install(d_gs.filter()).unwrap();
    assert_eq!(run_as(&mut g, &d_gs, 0, rd(FS_BASE)).0, no_exit(read_ok(0)));
    assert_eq!(
        run_as(&mut g, &d_gs, 0, rd(GS_BASE)).0,
        exited(filter, rd(GS_BASE), read_ok(gs))
    );
    assert_eq!(
        run_as(&mut g, &d_gs, 0, wr(GS_BASE, 0)).0,
        no_exit(WRITE_OK)
    );

    // And none.
    msrs.remove_filter().unwrap();
    for d in [&d_fs, &d_gs] {
        assert_eq!(run_as(&mut g, d, 0, rd(FS_BASE)).0, no_exit(read_ok(0)));
        assert_eq!(run_as(&mut g, d, 0, rd(GS_BASE)).0, no_exit(read_ok(0)));
    }
    for d in [&d_fs, &d_gs] {
        let s = d.handler_stats();
        assert_eq!(
            (s.len(), s[0].reads, s[0].writes, s[0].faults),
            (1, 1, 0, 0)
        );
    }
}

#[test]
fn each_exit_reason() {
    if skip_without_kvm() {
        return;
    }
    // The kernel's numbers, as the exit mask takes them.
    assert_eq!(MsrExitReason::Inval.bits(), 1);
    assert_eq!(MsrExitReason::Unknown.bits(), 2);
    assert_eq!(MsrExitReason::Filter.bits(), 4);

    let filter = parse("default allow\ndeny rw TSC_AUX\n")
        .pack()
        .unwrap()
        .filter;
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(
        g.kvm(),
        vm_handle(&g),
        MsrExitReason::Unknown | MsrExitReason::Inval,
    )
    .unwrap();
    msrs.install(&filter).unwrap();

    let cases: [(MsrAccess, MsrExitReason); 6] = [
        // Denied by the filter.
        (rd(TSC_AUX), MsrExitReason::Filter),
        (wr(TSC_AUX, 3), MsrExitReason::Filter),
        // Allowed, unknown to KVM.
        (rd(NON_EXISTENT), MsrExitReason::Unknown),
        (wr(NON_EXISTENT, 5), MsrExitReason::Unknown),
        // Allowed, known, but KVM cannot complete it (x2APIC without an in-kernel LAPIC).
        (rd(X2APIC_TPR), MsrExitReason::Inval),
        (wr(0x8ff, 0), MsrExitReason::Inval),
    ];
    for (access, reason) in cases {
        let r = run_failing(&mut g, access);
        println!("all reasons: {access:x?} -> {r:x?}");
        assert_eq!(r, exited(reason, access, GP), "{access:x?}");
        // The kernel's fail-open default when the exit is ignored: the access succeeds.
        let open = g.run_raw(access).unwrap();
        let result = match access {
            MsrAccess::Read { .. } => read_ok(0),
            MsrAccess::Write { .. } => WRITE_OK,
        };
        assert_eq!(open, exited(reason, access, result), "{access:x?}");
    }

    // FILTER only: unknown and invalid accesses become #GP in the kernel, without an exit.
    msrs.set_exit_reasons(MsrExitReason::Filter).unwrap();
    for (access, reason) in cases {
        let r = run_failing(&mut g, access);
        let want = if reason == MsrExitReason::Filter {
            exited(reason, access, GP)
        } else {
            no_exit(GP)
        };
        assert_eq!(r, want, "FILTER only: {access:x?}");
    }
}

#[test]
fn handler_fault_is_guest_gp() {
    if skip_without_kvm() {
        return;
    }
    let refuse: Arc<dyn MsrHandler> = Arc::new(Refuse);
    let d = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
        .handle(TSC_AUX, Access::READ_WRITE, Refuse)
        .unwrap()
        .handle(
            NON_EXISTENT + 1,
            Access::READ_WRITE,
            handlers::Constant::new(9),
        )
        .unwrap()
        .on_unknown(ExitRoute::Handler(refuse))
        .build()
        .unwrap();
    let mut g = GuestVm::new().unwrap();
    let _msrs = {
        let mut m = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::Unknown).unwrap();
        m.install(d.filter()).unwrap();
        m
    };
    let f = MsrExitReason::Filter;
    let cases: [(MsrAccess, Outcome); 5] = [
        (rd(TSC_AUX), exited(f, rd(TSC_AUX), GP)),
        (wr(TSC_AUX, 1), exited(f, wr(TSC_AUX, 1), GP)),
        // A handler that succeeds right after: the guest carries on normally.
        (
            rd(NON_EXISTENT + 1),
            exited(f, rd(NON_EXISTENT + 1), read_ok(9)),
        ),
        // The same through a route (UNKNOWN exit, no handler).
        (
            rd(NON_EXISTENT),
            exited(MsrExitReason::Unknown, rd(NON_EXISTENT), GP),
        ),
        (
            wr(NON_EXISTENT, 4),
            exited(MsrExitReason::Unknown, wr(NON_EXISTENT, 4), GP),
        ),
    ];
    for (access, want) in cases {
        let (outcome, dispatch) = run_as(&mut g, &d, 0, access);
        assert_eq!(outcome, want, "{access:x?}");
        assert!(
            matches!(dispatch, Some(Dispatch::Msr { fault, .. }) if fault == (want.result == GP))
        );
    }
    let s = d.handler_stats();
    assert_eq!(
        s.iter()
            .map(|s| (s.first, s.reads, s.writes, s.faults))
            .collect::<Vec<_>>(),
        vec![(NON_EXISTENT + 1, 1, 0, 0), (TSC_AUX, 1, 1, 2)]
    );
    assert_eq!(
        d.route_stats(),
        RouteStats {
            unknown: 2,
            inval: 0,
            unhandled: 0,
            faults: 2,
            untracked: 0
        }
    );
}

/// Owned pieces of one raw filter the kernel refuses, and why.
struct Case {
    name: &'static str,
    flags: u32,
    ranges: Vec<(u32, u32, u32, Vec<u8>)>,
    want: InvalidFilter,
}

impl Case {
    fn raw_ranges(&self) -> Vec<RawRange<'_>> {
        self.ranges
            .iter()
            .map(|(flags, base, nmsrs, bitmap)| RawRange {
                flags: *flags,
                nmsrs: *nmsrs,
                base: *base,
                bitmap,
            })
            .collect()
    }
}

fn invalid_cases() -> Vec<Case> {
    let good = |base: u32| (3u32, base, 1u32, vec![0u8; 8]);
    vec![
        Case {
            name: "filter flags 2",
            flags: 2,
            ranges: vec![good(FS_BASE)],
            want: InvalidFilter::FilterFlags { flags: 2 },
        },
        Case {
            name: "default deny, every range empty",
            flags: abi::DEFAULT_DENY,
            ranges: vec![(3, FS_BASE, 0, vec![]); 16],
            want: InvalidFilter::DenyWithoutRanges,
        },
        Case {
            name: "default deny, no ranges",
            flags: abi::DEFAULT_DENY,
            ranges: vec![],
            want: InvalidFilter::DenyWithoutRanges,
        },
        Case {
            name: "range flags 4",
            flags: 0,
            ranges: vec![good(FS_BASE), (4, GS_BASE, 1, vec![0; 8])],
            want: InvalidFilter::RangeFlags { slot: 1, flags: 4 },
        },
        Case {
            name: "range flags 0",
            flags: 0,
            ranges: vec![(0, GS_BASE, 1, vec![0; 8])],
            want: InvalidFilter::RangeNoAccess { slot: 0 },
        },
        Case {
            name: "nmsrs 0x3001",
            flags: 0,
            ranges: vec![good(FS_BASE), (1, 0, 0x3001, vec![0xff; 0x608])],
            want: InvalidFilter::RangeTooLarge {
                slot: 1,
                nmsrs: 0x3001,
            },
        },
    ]
}

/// nmsrs 1 with a 1-byte bitmap: the kernel reads a whole 64-bit word.
fn short_bitmap_filter(bitmap: &[u8]) -> [RawRange<'_>; 1] {
    [RawRange {
        flags: 3,
        nmsrs: 1,
        base: FS_BASE,
        bitmap,
    }]
}

const SHORT_BITMAP: InvalidFilter = InvalidFilter::BitmapTooShort {
    slot: 0,
    nmsrs: 1,
    needed: 8,
    given: 1,
};

#[test]
fn invalid_filters_rejected_by_model() {
    for c in &invalid_cases() {
        let ranges = c.raw_ranges();
        let got = Filter::from_raw(&RawFilter {
            flags: c.flags,
            ranges: &ranges,
        });
        assert_eq!(got, Err(c.want), "{}", c.name);
        assert_eq!(c.want.errno(), Some(abi::EINVAL), "{}", c.name);
    }
    let one_byte = [0u8];
    let short = short_bitmap_filter(&one_byte);
    assert_eq!(
        Filter::from_raw(&RawFilter {
            flags: 0,
            ranges: &short
        }),
        Err(SHORT_BITMAP)
    );
    assert_eq!(SHORT_BITMAP.errno(), Some(abi::EFAULT));
    // One byte short of what the kernel reads for nmsrs 0x3000, too.
    let big = vec![0u8; 0x5ff];
    let big_range = [RawRange {
        flags: 1,
        nmsrs: 0x3000,
        base: 0,
        bitmap: &big,
    }];
    assert!(matches!(
        Filter::from_raw(&RawFilter {
            flags: 0,
            ranges: &big_range
        }),
        Err(InvalidFilter::BitmapTooShort {
            needed: 0x600,
            given: 0x5ff,
            ..
        })
    ));
}

#[test]
fn invalid_filters_rejected_by_kernel() {
    if skip_without_kvm() {
        return;
    }
    // A refused filter leaves the installed one in place.
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    msrs.install(
        &parse("default allow\ndeny r FS_BASE\n")
            .pack()
            .unwrap()
            .filter,
    )
    .unwrap();
    let still_filtered = exited(MsrExitReason::Filter, rd(FS_BASE), GP);
    assert_eq!(run_failing(&mut g, rd(FS_BASE)), still_filtered);
    for c in &invalid_cases() {
        let ranges = c.raw_ranges();
        let raw = RawFilter {
            flags: c.flags,
            ranges: &ranges,
        };
        let model = Filter::from_raw(&raw).unwrap_err();
        // SAFETY: every non-empty range points into a live buffer of at least
        // ceil(nmsrs / 64) * 8 bytes (0x608 for nmsrs 0x3001, which the kernel refuses unread).
        let got = unsafe { raw_set_filter(msrs.vm(), &to_kvm_filter(&raw)) };
        println!("kernel, {}: {got:?}", c.name);
        assert_eq!(got.map_err(Some), Err(model.errno()), "{}", c.name);
        assert_eq!(got, Err(abi::EINVAL), "{}", c.name);
        assert_eq!(
            run_failing(&mut g, rd(FS_BASE)),
            still_filtered,
            "{}",
            c.name
        );
    }
    // The 1-byte bitmap, placed so that the kernel's 8-byte read runs into an unmapped page.
    let page_end = PageEnd::new();
    let short = short_bitmap_filter(page_end.last_byte());
    let raw = RawFilter {
        flags: 0,
        ranges: &short,
    };
    assert_eq!(Filter::from_raw(&raw), Err(SHORT_BITMAP));
    // SAFETY: the 1-byte bitmap ends its readable page; the kernel's 8-byte read faults in the
    // PROT_NONE page after it and the ioctl fails with EFAULT.
    let got = unsafe { raw_set_filter(msrs.vm(), &to_kvm_filter(&raw)) };
    println!("kernel, 1-byte bitmap at a page end: {got:?}");
    assert_eq!(got, Err(abi::EFAULT));
    assert_eq!(run_failing(&mut g, rd(FS_BASE)), still_filtered);
}
