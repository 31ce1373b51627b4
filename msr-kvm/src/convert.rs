//! Conversions between [`msr_core::Filter`] and the filter types of kvm-ioctls and kvm-bindings.

use std::marker::PhantomData;

use kvm_bindings::{kvm_msr_filter, kvm_msr_filter_range};
use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags};
use msr_core::{Action, Filter, InvalidFilter, Range, RawFilter, RawRange};

/// The bitmap of a range as the bytes the kernel reads: `ceil(nmsrs / 64) * 8` of them.
pub fn bitmap_bytes(range: &Range) -> &[u8] {
    let words = range.bitmap_words();
    // SAFETY: `words` is a valid, initialised slice of u64; viewing its memory as u8 (alignment
    // 1, no invalid bit patterns) for exactly its length in bytes stays inside the allocation and
    // shares its lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// A `struct kvm_msr_filter` whose bitmap pointers point into a borrowed [`Filter`]; what
/// `KVM_X86_SET_MSR_FILTER` takes.
pub struct KvmFilter<'a> {
    raw: kvm_msr_filter,
    _filter: PhantomData<&'a Filter>,
}

impl<'a> KvmFilter<'a> {
    /// Lays out `filter` as the kernel takes it (slot for slot, empty slots included).
    pub fn new(filter: &'a Filter) -> KvmFilter<'a> {
        let mut raw = kvm_msr_filter {
            flags: filter.flags(),
            ..Default::default()
        };
        for (out, range) in raw.ranges.iter_mut().zip(filter.ranges()) {
            if range.is_empty() {
                continue;
            }
            *out = kvm_msr_filter_range {
                flags: range.flags().bits(),
                nmsrs: range.nmsrs(),
                base: range.base(),
                // The kernel only reads through this pointer.
                bitmap: bitmap_bytes(range).as_ptr().cast_mut(),
            };
        }
        KvmFilter {
            raw,
            _filter: PhantomData,
        }
    }

    /// The raw structure; its bitmap pointers are valid while the filter is borrowed.
    pub fn as_raw(&self) -> &kvm_msr_filter {
        &self.raw
    }
}

/// The filter as kvm-ioctls' `VmFd::set_msr_filter` takes it.
///
/// Beware: that function checks only `ceil(nmsrs / 8)` bitmap bytes while the kernel reads
/// `ceil(nmsrs / 64) * 8`; the slices returned here have the kernel's length.
pub fn to_kvm_ioctls(filter: &Filter) -> (MsrFilterDefaultAction, Vec<MsrFilterRange<'_>>) {
    let default = match filter.default_action() {
        Action::Allow => MsrFilterDefaultAction::ALLOW,
        Action::Deny => MsrFilterDefaultAction::DENY,
    };
    let ranges = filter
        .used_ranges()
        .map(|(_, r)| MsrFilterRange {
            flags: MsrFilterRangeFlags::from_bits_truncate(r.flags().bits()),
            base: r.base(),
            msr_count: r.nmsrs(),
            bitmap: bitmap_bytes(r),
        })
        .collect();
    (default, ranges)
}

/// Checks and copies a filter given as kvm-ioctls' types, with the kernel's rules.
pub fn from_kvm_ioctls(
    default: MsrFilterDefaultAction,
    ranges: &[MsrFilterRange<'_>],
) -> Result<Filter, InvalidFilter> {
    let raw: Vec<RawRange<'_>> = ranges
        .iter()
        .map(|r| RawRange {
            flags: r.flags.bits(),
            nmsrs: r.msr_count,
            base: r.base,
            bitmap: r.bitmap,
        })
        .collect();
    Filter::from_raw(&RawFilter {
        flags: default as u32,
        ranges: &raw,
    })
}

/// Checks and copies a `struct kvm_msr_filter` built by another program.
///
/// # Safety
/// Every range the kernel would read (valid filter flags; `0 < nmsrs <= 0x3000`; flags READ,
/// WRITE or both) must have a null `bitmap` or one readable for `ceil(nmsrs / 64) * 8` bytes.
/// Other ranges' pointers are never read.
pub unsafe fn from_kvm_bindings(raw: &kvm_msr_filter) -> Result<Filter, InvalidFilter> {
    use msr_core::abi;
    let mut ranges = [RawRange::EMPTY; 16];
    for (out, r) in ranges.iter_mut().zip(raw.ranges.iter()) {
        // Read a bitmap only where the kernel would: valid filter flags, a non-empty range with
        // valid flags and at most 0x3000 MSRs. Elsewhere the kernel refuses before reading, and
        // so does `Filter::from_raw`, whatever the (possibly dangling) pointer.
        let kernel_reads = raw.flags & !abi::FILTER_VALID_MASK == 0
            && r.nmsrs > 0
            && r.nmsrs <= abi::MAX_NMSRS
            && r.flags != 0
            && r.flags & !abi::RANGE_VALID_MASK == 0;
        let len = if kernel_reads && !r.bitmap.is_null() {
            abi::bitmap_bytes(r.nmsrs)
        } else {
            0
        };
        let bitmap: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: the kernel would read this range's bitmap, so the caller promises `len`
            // (= ceil(nmsrs / 64) * 8 <= 0x600) readable bytes at the non-null `bitmap`.
            unsafe { std::slice::from_raw_parts(r.bitmap, len) }
        };
        *out = RawRange {
            flags: r.flags,
            nmsrs: r.nmsrs,
            base: r.base,
            bitmap,
        };
    }
    Filter::from_raw(&RawFilter {
        flags: raw.flags,
        ranges: &ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use msr_core::{AccessType, Policy};

    #[test]
    fn round_trips_through_both_crates() {
        let policy: Policy<8> =
            Policy::parse("default deny\nallow rw 0x0+0x100\ndeny w 0x48\nallow r 0xc0000080+5")
                .unwrap();
        let filter = policy.pack().unwrap().filter;
        let (default, ranges) = to_kvm_ioctls(&filter);
        for r in &ranges {
            assert_eq!(r.bitmap.len(), msr_core::abi::bitmap_bytes(r.msr_count));
        }
        assert_eq!(from_kvm_ioctls(default, &ranges).unwrap(), filter);
        let kvm = KvmFilter::new(&filter);
        // SAFETY: the pointers point into `filter`, which is alive, with the kernel's length.
        let back = unsafe { from_kvm_bindings(kvm.as_raw()) }.unwrap();
        assert_eq!(back, filter);
        assert_eq!(back.decide(0x48, AccessType::Write), msr_core::Action::Deny);
    }
}
