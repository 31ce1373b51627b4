//! The ordering rule on the real kernel: a filter installed while the FILTER exit is not enabled
//! turns denied accesses into #GP in the guest; `MsrInterception` keeps the FILTER exit enabled
//! for as long as a filter is installed and tears down filter-first.

mod common;

use common::*;
use kvm_ioctls::MsrExitReason;
use msr_filter_core::{Filter, Policy};
use msr_filter_kvm::guest::{GuestResult, GuestVm};
use msr_filter_kvm::{convert, KvmError, MsrInterception};

/// `default allow`, reads of FS_BASE denied: one range, one word of bitmap.
fn deny_fs_base_read() -> Filter {
    let policy: Policy<4> = Policy::parse("default allow\ndeny r FS_BASE\n").unwrap();
    let packed = policy.pack().unwrap();
    assert_eq!(packed.filter.range_count(), 1);
    assert_eq!(packed.filter.bitmap_bytes(), 8);
    packed.filter
}

const GP: GuestResult = GuestResult::GeneralProtection;

#[test]
fn filter_before_exits_is_a_silent_gp_and_interception_is_not() {
    if skip_without_kvm() {
        return;
    }
    let filter = deny_fs_base_read();

    // The hazard: kvm-ioctls' safe wrapper, no KVM_CAP_X86_USER_SPACE_MSR.
    let mut g = GuestVm::new().unwrap();
    assert_eq!(g.run_raw(rd(FS_BASE)).unwrap(), no_exit(read_ok(0)));
    let ioctls = convert::KvmIoctlsFilter::from(&filter);
    g.vm()
        .set_msr_filter(ioctls.default, &ioctls.ranges)
        .unwrap();
    let r = g.run_raw(rd(FS_BASE)).unwrap();
    println!("raw set_msr_filter, exits never enabled: FS_BASE read -> {r:?}");
    assert_eq!(r, no_exit(GP), "denied read must be a silent #GP");
    // Writes are not denied by this filter and still reach the kernel.
    assert_eq!(g.run_raw(wr(FS_BASE, 0)).unwrap(), no_exit(WRITE_OK));
    // Enabling the exit afterwards (what MsrInterception does first) makes the next access exit.
    raw_enable_exits(g.vm(), MsrExitReason::Filter);
    assert_eq!(
        g.run_raw(rd(FS_BASE)).unwrap(),
        exited(MsrExitReason::Filter, rd(FS_BASE), read_ok(0))
    );

    // The same filter through MsrInterception on a fresh VM: the FILTER exit comes.
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    assert_eq!(msrs.exit_reasons(), MsrExitReason::Filter);
    assert!(msrs.install(&filter).unwrap().is_empty());
    assert!(msrs.filter_installed());
    let r = g.run_raw(rd(FS_BASE)).unwrap();
    println!("MsrInterception: FS_BASE read -> {r:?}");
    assert_eq!(r, exited(MsrExitReason::Filter, rd(FS_BASE), read_ok(0)));
    assert_eq!(
        run_failing(&mut g, rd(FS_BASE)),
        exited(MsrExitReason::Filter, rd(FS_BASE), GP)
    );
    assert_eq!(g.run_raw(rd(GS_BASE)).unwrap(), no_exit(read_ok(0)));
    msrs.shutdown().unwrap();
}

#[test]
fn filter_exit_cannot_be_dropped_while_a_filter_is_installed() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    msrs.install(&deny_fs_base_read()).unwrap();
    let filtered = exited(MsrExitReason::Filter, rd(FS_BASE), GP);
    assert_eq!(run_failing(&mut g, rd(FS_BASE)), filtered);

    let err = msrs.set_exit_reasons(MsrExitReason::Unknown).unwrap_err();
    assert!(
        matches!(err, KvmError::FilterExitRequired { asked } if asked == MsrExitReason::Unknown),
        "{err:?}"
    );
    assert!(err.to_string().contains("remove the filter first"), "{err}");
    let err = msrs.set_exit_reasons(MsrExitReason::empty()).unwrap_err();
    assert!(
        matches!(err, KvmError::FilterExitRequired { .. }),
        "{err:?}"
    );
    assert_eq!(msrs.exit_reasons(), MsrExitReason::Filter);
    // Refused before reaching the kernel: FILTER still exits, UNKNOWN was not enabled.
    assert_eq!(run_failing(&mut g, rd(FS_BASE)), filtered);
    assert_eq!(run_failing(&mut g, rd(NON_EXISTENT)), no_exit(GP));

    // Adding reasons is fine while FILTER stays.
    msrs.set_exit_reasons(MsrExitReason::Filter | MsrExitReason::Unknown)
        .unwrap();
    assert_eq!(
        run_failing(&mut g, rd(NON_EXISTENT)),
        exited(MsrExitReason::Unknown, rd(NON_EXISTENT), GP)
    );
    assert_eq!(run_failing(&mut g, rd(FS_BASE)), filtered);

    // After the filter is gone, FILTER may go.
    msrs.remove_filter().unwrap();
    assert!(!msrs.filter_installed());
    assert_eq!(g.run_raw(rd(FS_BASE)).unwrap(), no_exit(read_ok(0)));
    msrs.set_exit_reasons(MsrExitReason::Unknown).unwrap();
    assert_eq!(msrs.exit_reasons(), MsrExitReason::Unknown);
    assert_eq!(g.run_raw(rd(FS_BASE)).unwrap(), no_exit(read_ok(0)));
    assert_eq!(
        run_failing(&mut g, rd(NON_EXISTENT)),
        exited(MsrExitReason::Unknown, rd(NON_EXISTENT), GP)
    );
    msrs.shutdown().unwrap();
}

#[test]
fn shutdown_and_drop_leave_no_filter_and_no_exits() {
    if skip_without_kvm() {
        return;
    }
    let filter = deny_fs_base_read();
    for explicit in [true, false] {
        let mut g = GuestVm::new().unwrap();
        let mut msrs = MsrInterception::new(
            g.kvm(),
            vm_handle(&g),
            MsrExitReason::Unknown | MsrExitReason::Inval,
        )
        .unwrap();
        msrs.install(&filter).unwrap();
        // Everything exits while interception is up.
        assert_eq!(
            run_failing(&mut g, rd(FS_BASE)),
            exited(MsrExitReason::Filter, rd(FS_BASE), GP)
        );
        assert_eq!(
            run_failing(&mut g, rd(NON_EXISTENT)),
            exited(MsrExitReason::Unknown, rd(NON_EXISTENT), GP)
        );
        assert_eq!(
            run_failing(&mut g, rd(X2APIC_TPR)),
            exited(MsrExitReason::Inval, rd(X2APIC_TPR), GP)
        );
        if explicit {
            msrs.shutdown().unwrap();
        } else {
            drop(msrs);
        }
        // No filter: FS_BASE is read in the kernel. No exits: unknown and invalid are plain #GP.
        assert_eq!(
            run_failing(&mut g, rd(FS_BASE)),
            no_exit(read_ok(0)),
            "explicit shutdown: {explicit}"
        );
        assert_eq!(run_failing(&mut g, rd(NON_EXISTENT)), no_exit(GP));
        assert_eq!(run_failing(&mut g, rd(X2APIC_TPR)), no_exit(GP));
        assert_eq!(run_failing(&mut g, wr(NON_EXISTENT, 1)), no_exit(GP));
    }
}

/// The ordering rule says FILTER must be in the exit mask *before* a filter is installed.
/// `MsrInterception` lets FILTER be dropped once it knows no filter is installed; a later
/// `install` must then enable it again (or refuse), never put the filter in without it.
#[test]
fn install_after_dropping_filter_exit_still_intercepts() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    msrs.remove_filter().unwrap();
    msrs.set_exit_reasons(MsrExitReason::Unknown).unwrap();
    match msrs.install(&deny_fs_base_read()) {
        Err(KvmError::FilterExitRequired { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => {
            let r = run_failing(&mut g, rd(FS_BASE));
            assert_eq!(
                r,
                exited(MsrExitReason::Filter, rd(FS_BASE), GP),
                "install() with FILTER dropped put the filter in without the FILTER exit \
                 (exit reasons now {:?})",
                msrs.exit_reasons()
            );
        }
    }
}

/// A new owner cannot know whether another owner (or code using the VM fd) installed a filter:
/// it refuses to drop FILTER until it has removed or installed the filter itself.
#[test]
fn a_second_owner_keeps_the_filter_exit_of_the_first() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let mut first = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    first.install(&deny_fs_base_read()).unwrap();
    let mut second = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    assert!(matches!(
        second.set_exit_reasons(MsrExitReason::Unknown),
        Err(KvmError::FilterExitRequired { .. })
    ));
    assert_eq!(
        run_failing(&mut g, rd(FS_BASE)),
        exited(MsrExitReason::Filter, rd(FS_BASE), GP)
    );
    std::mem::forget(second);
    drop(first);
}
