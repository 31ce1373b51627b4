//! The kernel constants msr-filter-core carries (it is no_std and depends on no bindings) equal
//! kvm-bindings' and libc's, and the structures have the kernel's layout.

use kvm_bindings as kb;
use msr_filter_core::abi;

#[test]
fn constants_equal_kvm_bindings() {
    assert_eq!(abi::MAX_RANGES, kb::KVM_MSR_FILTER_MAX_RANGES as usize);
    assert_eq!(
        abi::MAX_BITMAP_BYTES,
        kb::KVM_MSR_FILTER_MAX_BITMAP_SIZE as usize
    );
    assert_eq!(abi::RANGE_READ, kb::KVM_MSR_FILTER_READ);
    assert_eq!(abi::RANGE_WRITE, kb::KVM_MSR_FILTER_WRITE);
    assert_eq!(abi::RANGE_VALID_MASK, kb::KVM_MSR_FILTER_RANGE_VALID_MASK);
    assert_eq!(abi::DEFAULT_ALLOW, kb::KVM_MSR_FILTER_DEFAULT_ALLOW);
    assert_eq!(abi::DEFAULT_DENY, kb::KVM_MSR_FILTER_DEFAULT_DENY);
    assert_eq!(abi::FILTER_VALID_MASK, kb::KVM_MSR_FILTER_VALID_MASK);
    assert_eq!(abi::EXIT_REASON_INVAL, kb::KVM_MSR_EXIT_REASON_INVAL);
    assert_eq!(abi::EXIT_REASON_UNKNOWN, kb::KVM_MSR_EXIT_REASON_UNKNOWN);
    assert_eq!(abi::EXIT_REASON_FILTER, kb::KVM_MSR_EXIT_REASON_FILTER);
    assert_eq!(
        abi::EXIT_REASON_VALID_MASK,
        kb::KVM_MSR_EXIT_REASON_VALID_MASK
    );
    assert_eq!(abi::EXIT_X86_RDMSR, kb::KVM_EXIT_X86_RDMSR);
    assert_eq!(abi::EXIT_X86_WRMSR, kb::KVM_EXIT_X86_WRMSR);
    assert_eq!(abi::CAP_X86_USER_SPACE_MSR, kb::KVM_CAP_X86_USER_SPACE_MSR);
    assert_eq!(abi::CAP_X86_MSR_FILTER, kb::KVM_CAP_X86_MSR_FILTER);
    assert_eq!(abi::EINVAL, libc::EINVAL);
    assert_eq!(abi::EFAULT, libc::EFAULT);
}

#[test]
fn max_nmsrs_is_what_the_largest_bitmap_holds() {
    assert_eq!(
        abi::bitmap_bytes(abi::MAX_NMSRS),
        kb::KVM_MSR_FILTER_MAX_BITMAP_SIZE as usize
    );
    assert!(abi::bitmap_bytes(abi::MAX_NMSRS + 1) > abi::MAX_BITMAP_BYTES);
}

#[test]
fn filter_layout_is_the_kernels() {
    // The layout the kernel-semantics reference gives for x86_64.
    assert_eq!(std::mem::size_of::<kb::kvm_msr_filter_range>(), 24);
    assert_eq!(std::mem::size_of::<kb::kvm_msr_filter>(), 392);
    assert_eq!(std::mem::offset_of!(kb::kvm_msr_filter, ranges), 8);
    assert_eq!(
        std::mem::size_of_val(&kb::kvm_msr_filter::default().ranges),
        abi::MAX_RANGES * 24
    );
}
