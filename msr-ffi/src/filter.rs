//! Filters: the kernel's object, inspected, judged, and exported as `struct kvm_msr_filter`.

use kvm_bindings::{kvm_msr_filter, kvm_msr_filter_range};
use msr_filter_core::{abi, Decider, Filter};
use msr_filter_kvm::convert::{from_kvm_bindings, KvmFilter};

use crate::error::{arg_mut, arg_ref, ffi_boundary, msr_filter_status, Failure};
use crate::types::{access_type_from_c, msr_filter_action, msr_filter_decider};

/// `KVM_MSR_FILTER_MAX_RANGES`: range slots in a filter.
pub const MSR_FILTER_MAX_RANGES: usize = 16;

/// `struct kvm_msr_filter_range` of `<linux/kvm.h>` (x86), field for field; `pad` is the
/// padding the kernel's layout has before `bitmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct msr_filter_kvm_msr_filter_range {
    /// `KVM_MSR_FILTER_READ` (1) | `KVM_MSR_FILTER_WRITE` (2); 0 in an empty slot.
    pub flags: u32,
    /// MSRs covered; 0 in an empty slot.
    pub nmsrs: u32,
    /// First MSR covered.
    pub base: u32,
    /// Padding (the kernel's struct has it implicitly); 0.
    pub pad: u32,
    /// `ceil(nmsrs / 64) * 8` bytes of bitmap, bit `i` for MSR `base + i`, 1 = allow; NULL in
    /// an empty slot. The kernel only reads through it.
    pub bitmap: *mut u8,
}

/// `struct kvm_msr_filter` of `<linux/kvm.h>` (x86), layout-identical: pass a pointer to it to
/// `ioctl(vm_fd, KVM_X86_SET_MSR_FILTER, ...)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct msr_filter_kvm_msr_filter {
    /// `KVM_MSR_FILTER_DEFAULT_ALLOW` (0) or `KVM_MSR_FILTER_DEFAULT_DENY` (1).
    pub flags: u32,
    /// Padding (the kernel's struct has it implicitly); 0.
    pub pad: u32,
    /// The 16 range slots, in the kernel's order; empty slots have `nmsrs` 0.
    pub ranges: [msr_filter_kvm_msr_filter_range; MSR_FILTER_MAX_RANGES],
}

const _: () = {
    assert!(
        std::mem::size_of::<msr_filter_kvm_msr_filter>() == std::mem::size_of::<kvm_msr_filter>()
    );
    assert!(
        std::mem::offset_of!(msr_filter_kvm_msr_filter, ranges)
            == std::mem::offset_of!(kvm_msr_filter, ranges)
    );
    assert!(
        std::mem::size_of::<msr_filter_kvm_msr_filter_range>()
            == std::mem::size_of::<kvm_msr_filter_range>()
    );
    assert!(
        std::mem::offset_of!(msr_filter_kvm_msr_filter_range, bitmap)
            == std::mem::offset_of!(kvm_msr_filter_range, bitmap)
    );
};

impl From<&kvm_msr_filter> for msr_filter_kvm_msr_filter {
    fn from(raw: &kvm_msr_filter) -> Self {
        let mut out = msr_filter_kvm_msr_filter {
            flags: raw.flags,
            pad: 0,
            ranges: [msr_filter_kvm_msr_filter_range {
                flags: 0,
                nmsrs: 0,
                base: 0,
                pad: 0,
                bitmap: std::ptr::null_mut(),
            }; MSR_FILTER_MAX_RANGES],
        };
        for (o, r) in out.ranges.iter_mut().zip(raw.ranges.iter()) {
            o.flags = r.flags;
            o.nmsrs = r.nmsrs;
            o.base = r.base;
            o.bitmap = r.bitmap;
        }
        out
    }
}

impl From<&msr_filter_kvm_msr_filter> for kvm_msr_filter {
    fn from(raw: &msr_filter_kvm_msr_filter) -> Self {
        let mut out = kvm_msr_filter {
            flags: raw.flags,
            ..Default::default()
        };
        for (o, r) in out.ranges.iter_mut().zip(raw.ranges.iter()) {
            *o = kvm_msr_filter_range {
                flags: r.flags,
                nmsrs: r.nmsrs,
                base: r.base,
                bitmap: r.bitmap,
            };
        }
        out
    }
}

/// A filter the kernel accepts: default action plus 16 range slots with bitmaps, as
/// `msr_filter_policy_pack`, `msr_filter_filter_from_kvm` or `msr_filter_dispatcher_filter`
/// make it; it also holds its `struct kvm_msr_filter` form.
///
/// Immutable: every function on a filter only reads it, so any number of threads may use one
/// at once. Freed by `msr_filter_filter_free`.
#[derive(Debug)]
pub struct msr_filter_filter {
    pub(crate) filter: Filter,
    proven_minimal: bool,
    /// Bitmap pointers into `filter`.
    kvm: msr_filter_kvm_msr_filter,
}

impl msr_filter_filter {
    /// A new handle for C; its `kvm` form points into the handle's own (heap, never moved)
    /// storage.
    pub(crate) fn new_handle(filter: Filter, proven_minimal: bool) -> *mut msr_filter_filter {
        let handle = Box::into_raw(Box::new(msr_filter_filter {
            kvm: msr_filter_kvm_msr_filter::from(KvmFilter::new(&Filter::unfiltered()).as_raw()),
            filter,
            proven_minimal,
        }));
        // SAFETY: `handle` is the unique, live allocation just made; the shared borrow of its
        // filter ends before the write to its `kvm` field, and the bitmap pointers it yields stay
        // valid as long as the allocation (the filter is never changed or moved).
        unsafe {
            let kvm = msr_filter_kvm_msr_filter::from(KvmFilter::new(&(*handle).filter).as_raw());
            (*handle).kvm = kvm;
        }
        handle
    }
}

/// One range slot, as `msr_filter_filter_range` describes it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct msr_filter_range_info {
    /// READ (1) | WRITE (2); 0 for an empty slot.
    pub flags: u32,
    /// First MSR covered.
    pub base: u32,
    /// MSRs covered; 0 for an empty slot.
    pub nmsrs: u32,
    /// Bytes of bitmap the kernel reads: `ceil(nmsrs / 64) * 8`.
    pub bitmap_bytes: usize,
    /// The bitmap (bit `i` for MSR `base + i`, 1 = allow), `bitmap_bytes` long, owned by the
    /// filter and valid until it is freed; NULL for an empty slot.
    pub bitmap: *const u8,
}

/// An explained decision (see `msr_filter_filter_explain`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct msr_filter_explanation {
    /// The decision.
    pub action: msr_filter_action,
    /// What made it.
    pub decider: msr_filter_decider,
    /// For `MSR_FILTER_DECIDER_RANGE`: the slot that decided; else 0.
    pub slot: u32,
    /// For `MSR_FILTER_DECIDER_RANGE`: the bit in its bitmap (`index - base`); else 0.
    pub bit: u32,
}

/// `*action_out` = the kernel's decision for `access` (a `msr_filter_access`: READ or WRITE) to
/// MSR `index` under this filter: x2APIC MSRs are allowed; otherwise the first range in slot
/// order whose flags include the access and which holds the MSR decides by its bit; otherwise the
/// default action. Constant time; allocates nothing, locks nothing.
///
/// Thread-safe: any number of threads may decide on one filter at once.
///
/// # Safety
/// `filter` must be a live filter from this library; `action_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_decide(
    filter: *const msr_filter_filter,
    index: u32,
    access: u32,
    action_out: *mut msr_filter_action,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let action_out = arg_mut!(action_out);
        *action_out = filter
            .filter
            .decide(index, access_type_from_c(access)?)
            .into();
        Ok(())
    })
}

/// `*explanation_out` = the decision for `access` (READ or WRITE) to MSR `index` and what made
/// it: the x2APIC exemption, a range (slot and bit), the default action, or no filtering at all.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `explanation_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_explain(
    filter: *const msr_filter_filter,
    index: u32,
    access: u32,
    explanation_out: *mut msr_filter_explanation,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let explanation_out = arg_mut!(explanation_out);
        let e = filter.filter.explain(index, access_type_from_c(access)?);
        let (decider, slot, bit) = match e.decider {
            Decider::X2apic => (msr_filter_decider::X2apic, 0, 0),
            Decider::Range { slot, bit } => (msr_filter_decider::Range, slot as u32, bit),
            Decider::Default => (msr_filter_decider::Default, 0, 0),
            Decider::NoFilter => (msr_filter_decider::NoFilter, 0, 0),
        };
        *explanation_out = msr_filter_explanation {
            action: e.action.into(),
            decider,
            slot,
            bit,
        };
        Ok(())
    })
}

/// `*action_out` = the filter's default action.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `action_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_default_action(
    filter: *const msr_filter_filter,
    action_out: *mut msr_filter_action,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let action_out = arg_mut!(action_out);
        *action_out = filter.filter.default_action().into();
        Ok(())
    })
}

/// `*count_out` = the number of non-empty range slots.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `count_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_range_count(
    filter: *const msr_filter_filter,
    count_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let count_out = arg_mut!(count_out);
        *count_out = filter.filter.range_count();
        Ok(())
    })
}

/// `*bytes_out` = the bitmap bytes the kernel copies for the whole filter.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `bytes_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_bitmap_bytes(
    filter: *const msr_filter_filter,
    bytes_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let bytes_out = arg_mut!(bytes_out);
        *bytes_out = filter.filter.bitmap_bytes();
        Ok(())
    })
}

/// `*minimal_out` = whether packing proved the filter minimal (fewest ranges, then fewest
/// bitmap bytes). False when a search bound was hit, and for filters not made by
/// `msr_filter_policy_pack`.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `minimal_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_proven_minimal(
    filter: *const msr_filter_filter,
    minimal_out: *mut bool,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let minimal_out = arg_mut!(minimal_out);
        *minimal_out = filter.proven_minimal;
        Ok(())
    })
}

/// `*range_out` = range slot `slot` (0 to 15; empty slots included, with `nmsrs` 0). Its
/// `bitmap` points into the filter, valid until the filter is freed.
/// `MSR_FILTER_STATUS_OUT_OF_RANGE` for `slot >= 16`.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `range_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_range(
    filter: *const msr_filter_filter,
    slot: usize,
    range_out: *mut msr_filter_range_info,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let range_out = arg_mut!(range_out);
        if slot >= abi::MAX_RANGES {
            return Err(Failure::fixed(
                msr_filter_status::OutOfRange,
                "`slot` must be below 16 (KVM_MSR_FILTER_MAX_RANGES)",
            ));
        }
        let kvm = &filter.kvm.ranges[slot];
        *range_out = msr_filter_range_info {
            flags: kvm.flags,
            base: kvm.base,
            nmsrs: kvm.nmsrs,
            bitmap_bytes: filter.filter.ranges()[slot].bitmap_bytes(),
            bitmap: kvm.bitmap.cast_const(),
        };
        Ok(())
    })
}

/// `*kvm_out` = the filter as `struct kvm_msr_filter` (layout-identical to `<linux/kvm.h>`),
/// ready for `ioctl(vm_fd, KVM_X86_SET_MSR_FILTER, *kvm_out)`. The structure and its bitmaps
/// belong to the filter: valid until `msr_filter_filter_free`; never write through them.
///
/// Thread-safe: only reads the filter.
///
/// # Safety
/// `filter` must be a live filter from this library; `kvm_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_kvm_msr_filter(
    filter: *const msr_filter_filter,
    kvm_out: *mut *const msr_filter_kvm_msr_filter,
) -> msr_filter_status {
    ffi_boundary!({
        let filter = arg_ref!(filter);
        let kvm_out = arg_mut!(kvm_out);
        *kvm_out = &filter.kvm;
        Ok(())
    })
}

/// Checks a `struct kvm_msr_filter` another program built with the kernel's rules, in the
/// kernel's order, and copies it into a new filter (`*filter_out`, owned by the caller, freed
/// with `msr_filter_filter_free`; NULL on failure). `MSR_FILTER_STATUS_INVALID_FILTER` when the
/// kernel would refuse it: the message gives the reason and the errno the ioctl would return.
///
/// Thread-safe; `raw` and its bitmaps are only read during the call.
///
/// # Safety
/// `raw` must be readable; every range the kernel would read (valid filter flags, `0 < nmsrs
/// <= 0x3000`, flags READ and/or WRITE only) must have a NULL bitmap or one readable for
/// `ceil(nmsrs / 64) * 8` bytes. `filter_out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_from_kvm(
    raw: *const msr_filter_kvm_msr_filter,
    filter_out: *mut *mut msr_filter_filter,
) -> msr_filter_status {
    ffi_boundary!({
        let filter_out = arg_mut!(filter_out);
        *filter_out = std::ptr::null_mut();
        let raw = kvm_msr_filter::from(arg_ref!(raw));
        // SAFETY: the caller promises readable bitmaps wherever the kernel would read one.
        let filter = unsafe { from_kvm_bindings(&raw) }
            .map_err(|e| Failure::new(msr_filter_status::InvalidFilter, e))?;
        *filter_out = msr_filter_filter::new_handle(filter, false);
        Ok(())
    })
}

/// Frees a filter, its `struct kvm_msr_filter` form and its bitmaps. NULL is allowed and does
/// nothing. A filter installed on a VM stays installed: the kernel keeps its own copy.
///
/// # Safety
/// `filter` must be NULL or a live filter from this library that no thread uses any more.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_filter_free(filter: *mut msr_filter_filter) {
    let _ = ffi_boundary!({
        if !filter.is_null() {
            // SAFETY: the caller hands back a pointer from `Box::into_raw` in this library,
            // which nothing uses any more.
            drop(unsafe { Box::from_raw(filter) });
        }
        Ok(())
    });
}
