//! Conversions between [`msr_filter_core::Filter`] and the filter types of kvm-ioctls and kvm-bindings.

use std::marker::PhantomData;

use kvm_bindings::{kvm_msr_filter, kvm_msr_filter_range};
use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};
use msr_filter_core::{Action, Filter, InvalidFilter, Range, RawFilter, RawRange};

/// The bitmap of a range as the bytes the kernel reads: `ceil(nmsrs / 64) * 8` of them.
pub fn bitmap_bytes(range: &Range) -> &[u8] {
    let words = range.bitmap_words();
    // SAFETY: `words` is a valid, initialised slice of u64; viewing its memory as u8 (alignment
    // 1, no invalid bit patterns) for exactly its length in bytes stays inside the allocation and
    // shares its lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// A `struct kvm_msr_filter` whose bitmap pointers point into borrowed bitmaps (a [`Filter`]'s,
/// or a [`RawFilter`]'s); what `KVM_X86_SET_MSR_FILTER` takes.
///
/// ```
/// use msr_filter_core::Policy;
/// use msr_filter_kvm::convert::KvmFilter;
///
/// let filter = Policy::<4>::parse("default allow\ndeny w 0x48").unwrap().pack().unwrap().filter;
/// let kvm = KvmFilter::from(&filter);
/// assert_eq!(kvm.as_raw().ranges[0].nmsrs, 1);
/// ```
#[derive(Debug)]
pub struct KvmFilter<'a> {
    raw: kvm_msr_filter,
    _bitmaps: PhantomData<&'a [u8]>,
}

impl<'a> From<&'a Filter> for KvmFilter<'a> {
    fn from(filter: &'a Filter) -> KvmFilter<'a> {
        KvmFilter::new(filter)
    }
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
            _bitmaps: PhantomData,
        }
    }

    /// Lays out a raw filter exactly as given, **not validated**: slot for slot (at most 16
    /// ranges; more are left out), bitmap pointers into its slices (null for empty ones). For
    /// asking the kernel its own verdict on a filter another program built; what the kernel
    /// reads through short bitmaps is its business (EFAULT at worst).
    pub fn from_raw_unchecked(raw: &RawFilter<'a>) -> KvmFilter<'a> {
        let mut out = kvm_msr_filter {
            flags: raw.flags,
            ..Default::default()
        };
        for (slot, r) in out.ranges.iter_mut().zip(raw.ranges) {
            *slot = kvm_msr_filter_range {
                flags: r.flags,
                nmsrs: r.nmsrs,
                base: r.base,
                // The kernel only reads through this pointer.
                bitmap: if r.bitmap.is_empty() {
                    std::ptr::null_mut()
                } else {
                    r.bitmap.as_ptr().cast_mut()
                },
            };
        }
        KvmFilter {
            raw: out,
            _bitmaps: PhantomData,
        }
    }

    /// The raw structure; its bitmap pointers are valid while the filter is borrowed.
    pub fn as_raw(&self) -> &kvm_msr_filter {
        &self.raw
    }
}

/// Asks the kernel for its own verdict on a raw filter another program built: issues
/// `KVM_X86_SET_MSR_FILTER` with it (so on success **the filter is installed** on `vm`) and
/// returns the errno of a refusal. Safe whatever the input: every bitmap the kernel may read is
/// first copied into a buffer of at least the `ceil(nmsrs / 64) * 8` bytes (at most 0x600) the
/// kernel reads, padded with zeros, so the kernel never reads past what was given. (A bitmap
/// shorter than that is refused by [`Filter::from_raw`] as `BitmapTooShort`; the kernel, reading
/// the padded copy, does not see the shortness, so compare verdicts on filters whose bitmaps have
/// the kernel's length.)
pub fn kernel_verdict(vm: &VmFd, raw: &RawFilter<'_>) -> Result<(), i32> {
    let padded: Vec<Vec<u8>> = raw
        .ranges
        .iter()
        .map(|r| {
            let mut bitmap = r.bitmap.to_vec();
            let kernel_reads = msr_filter_core::abi::bitmap_bytes(r.nmsrs)
                .min(msr_filter_core::abi::MAX_BITMAP_BYTES);
            if !bitmap.is_empty() && bitmap.len() < kernel_reads {
                bitmap.resize(kernel_reads, 0);
            }
            bitmap
        })
        .collect();
    let ranges: Vec<RawRange<'_>> = raw
        .ranges
        .iter()
        .zip(&padded)
        .map(|(r, bitmap)| RawRange { bitmap, ..*r })
        .collect();
    let kvm = KvmFilter::from_raw_unchecked(&RawFilter {
        flags: raw.flags,
        ranges: &ranges,
    });
    // SAFETY: every non-empty bitmap pointer points into `padded`, alive for the call, with at
    // least as many bytes as the kernel reads for its range (nmsrs over 0x3000 is refused before
    // any read); empty bitmaps are null, which the kernel reads only for ranges it refuses.
    unsafe { vm.set_msr_filter_unchecked(kvm.as_raw()) }.map_err(|e| e.errno())
}

/// A filter as kvm-ioctls' `VmFd::set_msr_filter` takes it: the default action and the used
/// ranges, bitmaps borrowed.
///
/// Beware: that function checks only `ceil(nmsrs / 8)` bitmap bytes while the kernel reads
/// `ceil(nmsrs / 64) * 8`; the slices made by `From<&Filter>` have the kernel's length.
///
/// ```
/// use msr_filter_core::{Filter, Policy};
/// use msr_filter_kvm::convert::KvmIoctlsFilter;
///
/// let filter = Policy::<4>::parse("default deny\nallow rw 0x10").unwrap().pack().unwrap().filter;
/// let ioctls = KvmIoctlsFilter::from(&filter);
/// // vm.set_msr_filter(ioctls.default, &ioctls.ranges)?;
/// assert_eq!(Filter::try_from(&ioctls).unwrap(), filter);
/// ```
#[derive(Debug)]
pub struct KvmIoctlsFilter<'a> {
    /// The default action.
    pub default: MsrFilterDefaultAction,
    /// The used ranges, in slot order.
    pub ranges: Vec<MsrFilterRange<'a>>,
}

impl<'a> From<&'a Filter> for KvmIoctlsFilter<'a> {
    fn from(filter: &'a Filter) -> KvmIoctlsFilter<'a> {
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
        KvmIoctlsFilter { default, ranges }
    }
}

impl TryFrom<&KvmIoctlsFilter<'_>> for Filter {
    type Error = InvalidFilter;

    /// Checks and copies the filter with the kernel's rules.
    fn try_from(filter: &KvmIoctlsFilter<'_>) -> Result<Filter, InvalidFilter> {
        let raw: Vec<RawRange<'_>> = filter
            .ranges
            .iter()
            .map(|r| RawRange {
                flags: r.flags.bits(),
                nmsrs: r.msr_count,
                base: r.base,
                bitmap: r.bitmap,
            })
            .collect();
        Filter::from_raw(&RawFilter {
            flags: filter.default as u32,
            ranges: &raw,
        })
    }
}

/// Checks and copies a `struct kvm_msr_filter` built by another program.
///
/// A function, not `TryFrom`: it reads through the structure's raw pointers, which only the
/// caller can vouch for.
///
/// # Safety
/// Every range the kernel would read (valid filter flags; `0 < nmsrs <= 0x3000`; flags READ,
/// WRITE or both) must have a null `bitmap` or one readable for `ceil(nmsrs / 64) * 8` bytes.
/// Other ranges' pointers are never read.
pub unsafe fn from_kvm_bindings(raw: &kvm_msr_filter) -> Result<Filter, InvalidFilter> {
    use msr_filter_core::abi;
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
    use msr_filter_core::{AccessType, Policy};

    #[test]
    fn round_trips_through_both_crates() {
        let policy: Policy<8> =
            Policy::parse("default deny\nallow rw 0x0+0x100\ndeny w 0x48\nallow r 0xc0000080+5")
                .unwrap();
        let filter = policy.pack().unwrap().filter;
        let ioctls = KvmIoctlsFilter::from(&filter);
        for r in &ioctls.ranges {
            assert_eq!(
                r.bitmap.len(),
                msr_filter_core::abi::bitmap_bytes(r.msr_count)
            );
        }
        assert_eq!(Filter::try_from(&ioctls).unwrap(), filter);
        let kvm = KvmFilter::from(&filter);
        // SAFETY: the pointers point into `filter`, which is alive, with the kernel's length.
        let back = unsafe { from_kvm_bindings(kvm.as_raw()) }.unwrap();
        assert_eq!(back, filter);
        assert_eq!(
            back.decide(0x48, AccessType::Write),
            msr_filter_core::Action::Deny
        );
    }
}
