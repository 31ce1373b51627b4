//! The kernel ABI facts the model depends on (x86_64, `include/uapi/linux/kvm.h`).
//!
//! Every other module takes these numbers from here.

/// `KVM_MSR_FILTER_MAX_RANGES`: range slots in `struct kvm_msr_filter`.
pub const MAX_RANGES: usize = 16;
/// `KVM_MSR_FILTER_MAX_BITMAP_SIZE`: the most bitmap bytes the kernel copies for one range.
pub const MAX_BITMAP_BYTES: usize = 0x600;
/// Bitmap words of 64 bits in the largest range.
pub const MAX_BITMAP_WORDS: usize = MAX_BITMAP_BYTES / 8;
/// The most MSRs one range can cover (`MAX_BITMAP_BYTES * 8`).
pub const MAX_NMSRS: u32 = (MAX_BITMAP_BYTES * 8) as u32;
/// `KVM_MSR_FILTER_READ`: a range flag.
pub const RANGE_READ: u32 = 1;
/// `KVM_MSR_FILTER_WRITE`: a range flag.
pub const RANGE_WRITE: u32 = 2;
/// `KVM_MSR_FILTER_RANGE_VALID_MASK`.
pub const RANGE_VALID_MASK: u32 = RANGE_READ | RANGE_WRITE;
/// `KVM_MSR_FILTER_DEFAULT_ALLOW`: a filter flag (the absence of DEFAULT_DENY).
pub const DEFAULT_ALLOW: u32 = 0;
/// `KVM_MSR_FILTER_DEFAULT_DENY`: a filter flag.
pub const DEFAULT_DENY: u32 = 1;
/// `KVM_MSR_FILTER_VALID_MASK`.
pub const FILTER_VALID_MASK: u32 = DEFAULT_DENY;
/// First x2APIC MSR. The kernel never filters 0x800..=0x8ff, whatever the filter says.
pub const X2APIC_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_LAST: u32 = 0x8ff;
/// `KVM_MSR_EXIT_REASON_INVAL`: an allowed access KVM found invalid (exit-reason mask bit).
pub const EXIT_REASON_INVAL: u32 = 1;
/// `KVM_MSR_EXIT_REASON_UNKNOWN`: an allowed access to an MSR KVM does not know.
pub const EXIT_REASON_UNKNOWN: u32 = 2;
/// `KVM_MSR_EXIT_REASON_FILTER`: an access the filter denied.
pub const EXIT_REASON_FILTER: u32 = 4;
/// `KVM_MSR_EXIT_REASON_VALID_MASK`: the bits `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)` takes.
pub const EXIT_REASON_VALID_MASK: u32 =
    EXIT_REASON_INVAL | EXIT_REASON_UNKNOWN | EXIT_REASON_FILTER;
/// `KVM_EXIT_X86_RDMSR`: `kvm_run.exit_reason` of an `rdmsr` exit.
pub const EXIT_X86_RDMSR: u32 = 29;
/// `KVM_EXIT_X86_WRMSR`: `kvm_run.exit_reason` of a `wrmsr` exit.
pub const EXIT_X86_WRMSR: u32 = 30;
/// `KVM_CAP_X86_USER_SPACE_MSR`: the capability that enables MSR exits to user space.
pub const CAP_X86_USER_SPACE_MSR: u32 = 188;
/// `KVM_CAP_X86_MSR_FILTER`: the capability that says `KVM_X86_SET_MSR_FILTER` exists.
pub const CAP_X86_MSR_FILTER: u32 = 189;
/// `EINVAL`, the errno of most refusals of `KVM_X86_SET_MSR_FILTER`.
pub const EINVAL: i32 = 22;
/// `EFAULT`, the errno when the kernel cannot read a range's bitmap.
pub const EFAULT: i32 = 14;

/// Bytes of bitmap the kernel copies for a range of `nmsrs` MSRs:
/// `BITS_TO_LONGS(nmsrs) * sizeof(long)`, i.e. `nmsrs` rounded up to whole 64-bit words.
///
/// ```
/// assert_eq!(msr_filter_core::abi::bitmap_bytes(1), 8);
/// assert_eq!(msr_filter_core::abi::bitmap_bytes(65), 16);
/// ```
pub const fn bitmap_bytes(nmsrs: u32) -> usize {
    nmsrs.div_ceil(64) as usize * 8
}

/// Whether `index` is an x2APIC MSR, which the kernel never filters.
pub const fn is_x2apic(index: u32) -> bool {
    index.wrapping_sub(X2APIC_FIRST) <= X2APIC_LAST - X2APIC_FIRST
}
