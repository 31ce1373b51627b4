//! Tests of the guest harness against the real `/dev/kvm`.

use kvm_bindings::{kvm_enable_cap, KVM_CAP_X86_USER_SPACE_MSR};
use kvm_ioctls::{
    MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuExit,
};
use msr_filter_kvm::guest::{
    kvm_available, GuestResult, GuestVm, MsrAccess, MsrExitSeen, Outcome, RepeatStats,
};

const TSC: u32 = 0x10;
const FS_BASE: u32 = 0xC000_0100;
const BOGUS: u32 = 0x474f_4f00;

fn vm_or_skip() -> Option<GuestVm> {
    if !kvm_available() {
        println!("SKIPPED: no /dev/kvm");
        return None;
    }
    Some(GuestVm::new().expect("GuestVm::new"))
}

fn enable_user_space_msr(vm: &GuestVm, reasons: MsrExitReason) {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(reasons.bits());
    vm.vm()
        .enable_cap(&cap)
        .expect("enable KVM_CAP_X86_USER_SPACE_MSR");
}

/// Default allow; deny reads and writes of `count` MSRs from `base`.
fn deny_range(vm: &GuestVm, base: u32, count: u32) {
    // The kernel copies BITS_TO_LONGS(nmsrs) * 8 bytes, so the bitmap is
    // allocated in whole u64s even for a single MSR.
    let bitmap = vec![0u8; count.div_ceil(64) as usize * 8];
    let range = MsrFilterRange {
        flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
        base,
        msr_count: count,
        bitmap: &bitmap,
    };
    vm.vm()
        .set_msr_filter(MsrFilterDefaultAction::ALLOW, &[range])
        .expect("KVM_X86_SET_MSR_FILTER");
}

fn read(index: u32) -> MsrAccess {
    MsrAccess::Read { index }
}

fn completed(value: Option<u64>) -> GuestResult {
    GuestResult::Completed { value }
}

#[test]
fn no_cap_no_filter() {
    let Some(mut g) = vm_or_skip() else { return };

    let tsc = g.run_raw(read(TSC)).unwrap();
    println!("TSC: {tsc:?}");
    assert_eq!(tsc.exit, None);
    assert!(matches!(tsc.result, GuestResult::Completed { value: Some(v) } if v != 0));

    let fs = g.run_raw(read(FS_BASE)).unwrap();
    println!("FS_BASE: {fs:?}");
    assert_eq!(fs.exit, None);
    assert!(matches!(
        fs.result,
        GuestResult::Completed { value: Some(_) }
    ));

    let bogus = g.run_raw(read(BOGUS)).unwrap();
    println!("bogus: {bogus:?}");
    assert_eq!(
        bogus,
        Outcome {
            exit: None,
            result: GuestResult::GeneralProtection
        }
    );
}

#[test]
fn user_space_msr_unknown() {
    let Some(mut g) = vm_or_skip() else { return };
    enable_user_space_msr(&g, MsrExitReason::all());
    let expected_exit = Some(MsrExitSeen {
        reason: MsrExitReason::Unknown,
        index: BOGUS,
        is_write: false,
        data: 0,
    });

    let raw = g.run_raw(read(BOGUS)).unwrap();
    println!("bogus, run_raw: {raw:?}");
    assert_eq!(raw.exit, expected_exit);
    assert_eq!(raw.result, completed(Some(0)), "kernel fail-open default");

    let mut fail = |exit: &mut VcpuExit<'_>| {
        if let VcpuExit::X86Rdmsr(e) = exit {
            *e.error = 1;
        }
    };
    let gp = g.run(read(BOGUS), &mut fail).unwrap();
    println!("bogus, error=1: {gp:?}");
    assert_eq!(gp.exit, expected_exit);
    assert_eq!(gp.result, GuestResult::GeneralProtection);

    let mut supply = |exit: &mut VcpuExit<'_>| {
        if let VcpuExit::X86Rdmsr(e) = exit {
            *e.data = 0x1122_3344_5566_7788;
        }
    };
    let val = g.run(read(BOGUS), &mut supply).unwrap();
    println!("bogus, data set: {val:?}");
    assert_eq!(val.exit, expected_exit);
    assert_eq!(val.result, completed(Some(0x1122_3344_5566_7788)));

    // Known MSRs still never leave the kernel.
    let tsc = g.run_raw(read(TSC)).unwrap();
    assert_eq!(tsc.exit, None);
}

#[test]
fn filter_denies_fs_base() {
    let Some(mut g) = vm_or_skip() else { return };
    enable_user_space_msr(&g, MsrExitReason::all());
    deny_range(&g, FS_BASE, 1);

    let r = g.run_raw(read(FS_BASE)).unwrap();
    println!("FS_BASE read, filtered: {r:?}");
    assert_eq!(
        r.exit,
        Some(MsrExitSeen {
            reason: MsrExitReason::Filter,
            index: FS_BASE,
            is_write: false,
            data: 0
        })
    );
    assert_eq!(r.result, completed(Some(0)));

    let w = g
        .run_raw(MsrAccess::Write {
            index: FS_BASE,
            value: 0x1234,
        })
        .unwrap();
    println!("FS_BASE write, filtered: {w:?}");
    assert_eq!(
        w.exit,
        Some(MsrExitSeen {
            reason: MsrExitReason::Filter,
            index: FS_BASE,
            is_write: true,
            data: 0x1234
        })
    );
    assert_eq!(w.result, completed(None));

    // A write with both halves set reaches the exit as one 64-bit value.
    let mut deny = |exit: &mut VcpuExit<'_>| {
        if let VcpuExit::X86Wrmsr(e) = exit {
            *e.error = 1;
        }
    };
    let w = g
        .run(
            MsrAccess::Write {
                index: FS_BASE,
                value: 0xdead_beef_0000_1234,
            },
            &mut deny,
        )
        .unwrap();
    assert_eq!(w.exit.map(|e| e.data), Some(0xdead_beef_0000_1234));
    assert_eq!(w.result, GuestResult::GeneralProtection);

    // MSRs outside the range are unaffected.
    assert_eq!(g.run_raw(read(TSC)).unwrap().exit, None);
}

#[test]
fn filter_without_cap_injects_gp() {
    let Some(mut g) = vm_or_skip() else { return };
    deny_range(&g, FS_BASE, 1);
    let r = g.run_raw(read(FS_BASE)).unwrap();
    println!("FS_BASE read, filter without cap: {r:?}");
    assert_eq!(
        r,
        Outcome {
            exit: None,
            result: GuestResult::GeneralProtection
        }
    );
}

#[test]
fn x2apic_range_is_not_filtered() {
    // The harness VM has no in-kernel irqchip, so KVM itself fails x2APIC
    // accesses; the filter over 0x800..0x900 is accepted but never consulted.
    let Some(mut g) = vm_or_skip() else { return };
    enable_user_space_msr(&g, MsrExitReason::Filter);
    deny_range(&g, 0x800, 0x100);
    let r = g.run_raw(read(0x808)).unwrap();
    println!("x2APIC TPR read, filter over 0x800..0x900, FILTER only: {r:?}");
    assert!(
        r.exit.is_none_or(|e| e.reason != MsrExitReason::Filter),
        "x2APIC MSRs must not produce FILTER exits: {r:?}"
    );
    assert_eq!(
        r,
        Outcome {
            exit: None,
            result: GuestResult::GeneralProtection
        }
    );

    // Same filter with every reason enabled: the access leaves as INVAL, not
    // FILTER, and the fail-open default hands the guest 0.
    let Some(mut g) = vm_or_skip() else { return };
    enable_user_space_msr(&g, MsrExitReason::all());
    deny_range(&g, 0x800, 0x100);
    let r = g.run_raw(read(0x808)).unwrap();
    println!("x2APIC TPR read, same filter, all reasons: {r:?}");
    assert_eq!(r.exit.map(|e| e.reason), Some(MsrExitReason::Inval));
    assert_eq!(r.result, completed(Some(0)));
}

#[test]
fn run_repeated_counts_exits() {
    let Some(mut g) = vm_or_skip() else { return };
    let mut no_exit = |exit: &mut VcpuExit<'_>| panic!("unexpected MSR exit {exit:?}");

    // No filter: KVM handles every FS_BASE access in the kernel.
    let r = g.run_repeated(read(FS_BASE), 100, &mut no_exit).unwrap();
    println!("100 FS_BASE reads, no filter: {r:?}");
    assert_eq!((r.msr_exits, r.retired), (0, 100));
    assert!(matches!(
        r.result,
        GuestResult::Completed { value: Some(_) }
    ));
    let write = MsrAccess::Write {
        index: FS_BASE,
        value: 0x1234_5678,
    };
    let w = g.run_repeated(write, 100, &mut no_exit).unwrap();
    assert_eq!(
        w,
        RepeatStats {
            msr_exits: 0,
            retired: 100,
            result: completed(None)
        }
    );
    assert_eq!(
        g.run_repeated(read(FS_BASE), 0, &mut no_exit).unwrap(),
        RepeatStats {
            msr_exits: 0,
            retired: 0,
            result: completed(None)
        }
    );

    // Denied: every access is one exit, and each exit completes its own access.
    enable_user_space_msr(&g, MsrExitReason::Filter);
    deny_range(&g, FS_BASE, 1);
    let mut n = 0u64;
    let mut supply = |exit: &mut VcpuExit<'_>| {
        if let VcpuExit::X86Rdmsr(e) = exit {
            n += 1;
            *e.data = n;
        }
    };
    let r = g.run_repeated(read(FS_BASE), 100, &mut supply).unwrap();
    println!("100 FS_BASE reads, denied: {r:?}");
    assert_eq!(
        r,
        RepeatStats {
            msr_exits: 100,
            retired: 100,
            result: completed(Some(100))
        }
    );
    let mut written = Vec::new();
    let w = g
        .run_repeated(write, 7, &mut |exit| {
            if let VcpuExit::X86Wrmsr(e) = exit {
                written.push(e.data);
            }
        })
        .unwrap();
    assert_eq!((w.msr_exits, w.retired), (7, 7));
    assert_eq!(written, vec![0x1234_5678; 7]);

    // The loop stops at the first #GP.
    let mut k = 0;
    let mut third_fails = |exit: &mut VcpuExit<'_>| {
        if let VcpuExit::X86Rdmsr(e) = exit {
            k += 1;
            *e.error = u8::from(k == 3);
        }
    };
    let gp = g.run_repeated(read(FS_BASE), 10, &mut third_fails).unwrap();
    assert_eq!(
        gp,
        RepeatStats {
            msr_exits: 3,
            retired: 2,
            result: GuestResult::GeneralProtection
        }
    );

    // Other MSRs still never leave the kernel.
    let t = g.run_repeated(read(TSC), 50, &mut no_exit).unwrap();
    assert_eq!((t.msr_exits, t.retired), (0, 50));
}

/// `shared_vm` hands out the VM fd, which may outlive the harness: dropping the harness must
/// delete the memory slot before unmapping the memory behind it, or a vCPU created on the
/// shared fd would run over unmapped (or reused) host memory. A new slot over the same guest
/// physical range is accepted only once slot 0 is gone (EEXIST otherwise).
#[test]
fn dropping_the_harness_deletes_its_memory_slot_before_unmapping() {
    let Some(g) = vm_or_skip() else { return };
    let vm = g.shared_vm();
    drop(g);
    let layout = std::alloc::Layout::from_size_align(0x1000, 0x1000).unwrap();
    // SAFETY: a non-zero size with a valid alignment.
    let page = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!page.is_null());
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 1,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: 0x1000,
        userspace_addr: page as u64,
    };
    // SAFETY: `page` is a live, page-aligned allocation of 0x1000 bytes; the slot is deleted
    // below before it is freed, and no vCPU runs in between.
    let added = unsafe { vm.set_user_memory_region(region) };
    assert!(
        added.is_ok(),
        "slot 0 of a dropped GuestVm still maps guest address 0: {added:?}"
    );
    let delete = kvm_bindings::kvm_userspace_memory_region {
        memory_size: 0,
        ..region
    };
    // SAFETY: size 0 deletes slot 1; it names no memory.
    unsafe { vm.set_user_memory_region(delete) }.unwrap();
    // SAFETY: allocated above with this layout; the slot pointing at it is gone.
    unsafe { std::alloc::dealloc(page, layout) };
}
