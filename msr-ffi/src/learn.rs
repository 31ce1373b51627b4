//! Learning mode from C, through `msr_filter_kvm::learn`: a filter that denies every MSR, a
//! recorder per vCPU that completes each exit by forwarding it to KVM on that vCPU and records
//! it, and the allow-list policy learned from one or more recorders.

use std::ffi::{c_char, c_ulonglong, c_void};
use std::os::fd::BorrowedFd;

use msr_filter_core::Action;
use msr_filter_kvm::learn::{Learned, Learner, LearnerVcpu};

use crate::dispatch::{complete_parts, complete_run};
use crate::error::{arg_mut, arg_ref, copy_text, ffi_boundary, msr_filter_status, Failure};
use crate::filter::msr_filter_filter;
use crate::policy::msr_filter_policy;
use crate::types::msr_filter_outcome;

/// The learning filter: denies every MSR (x2APIC MSRs stay with KVM), so every access exits.
/// Made by `msr_filter_learner_new`, freed by `msr_filter_learner_free`. Immutable:
/// thread-safe.
#[derive(Debug)]
pub struct msr_filter_learner {
    inner: Learner,
}

/// One vCPU's recorder: completes that vCPU's MSR exits by forwarding them to KVM
/// (`KVM_GET_MSRS`/`KVM_SET_MSRS` on a duplicate of the vCPU fd) and records MSR, access,
/// count and first value. Made by `msr_filter_learner_vcpu_new`, freed by
/// `msr_filter_learner_vcpu_free`. **Not thread-safe**: it belongs to its vCPU's thread (which
/// is why it needs no lock).
#[derive(Debug)]
pub struct msr_filter_learner_vcpu {
    inner: LearnerVcpu,
}

/// What several recorders (vCPUs, runs) saw, joined. Made by `msr_filter_learned_new`, freed
/// by `msr_filter_learned_free`. Not thread-safe for changes.
#[derive(Debug)]
pub struct msr_filter_learned {
    inner: Learned,
}

/// A new learner. The caller owns `*learner_out` and frees it with `msr_filter_learner_free`.
///
/// # Safety
/// `learner_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_new(
    learner_out: *mut *mut msr_filter_learner,
) -> msr_filter_status {
    ffi_boundary!({
        let learner_out = arg_mut!(learner_out);
        *learner_out = Box::into_raw(Box::new(msr_filter_learner {
            inner: Learner::new(),
        }));
        Ok(())
    })
}

/// The learning filter, as a new filter handle the caller owns (free it with
/// `msr_filter_filter_free`): install it with `msr_filter_vm_install` (which enables FILTER
/// exits first), or export it with `msr_filter_filter_kvm_msr_filter`. Thread-safe.
///
/// # Safety
/// `learner` a live learner from this library; `filter_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_filter(
    learner: *const msr_filter_learner,
    filter_out: *mut *mut msr_filter_filter,
) -> msr_filter_status {
    ffi_boundary!({
        let learner = arg_ref!(learner);
        let filter_out = arg_mut!(filter_out);
        *filter_out = msr_filter_filter::new_handle(learner.inner.filter().clone(), true);
        Ok(())
    })
}

/// Frees a learner. NULL is allowed and does nothing. Recorders made from it stay valid.
///
/// # Safety
/// `learner` NULL or a live learner from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_free(learner: *mut msr_filter_learner) {
    let _ = ffi_boundary!({
        if !learner.is_null() {
            // SAFETY: from `Box::into_raw` in `msr_filter_learner_new`, freed once.
            drop(unsafe { Box::from_raw(learner) });
        }
        Ok(())
    });
}

/// A recorder for the vCPU whose fd is `vcpu_fd` (from `KVM_CREATE_VCPU`; the recorder keeps a
/// duplicate, so the caller keeps its own fd). The caller owns `*vcpu_out` and frees it with
/// `msr_filter_learner_vcpu_free`. `MSR_FILTER_STATUS_INVALID_ARGUMENT` when the fd cannot be
/// duplicated.
///
/// # Safety
/// `learner` a live learner from this library; `vcpu_fd` an open fd for the duration of the
/// call; `vcpu_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_vcpu_new(
    learner: *const msr_filter_learner,
    vcpu_fd: i32,
    vcpu_out: *mut *mut msr_filter_learner_vcpu,
) -> msr_filter_status {
    ffi_boundary!({
        let learner = arg_ref!(learner);
        let vcpu_out = arg_mut!(vcpu_out);
        *vcpu_out = std::ptr::null_mut();
        if vcpu_fd < 0 {
            return Err(Failure::fixed(
                msr_filter_status::InvalidArgument,
                "`vcpu_fd` is negative",
            ));
        }
        // SAFETY: the caller promises `vcpu_fd` open for the call; we only duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(vcpu_fd) };
        let inner = learner.inner.vcpu_fd(fd).map_err(|e| {
            Failure::new(
                msr_filter_status::InvalidArgument,
                format!("cannot duplicate vcpu_fd {vcpu_fd}: {e}"),
            )
        })?;
        *vcpu_out = Box::into_raw(Box::new(msr_filter_learner_vcpu { inner }));
        Ok(())
    })
}

/// Completes the MSR exit in `run` (a `struct kvm_run *` of this recorder's vCPU) by forwarding
/// it to KVM, and records it: `msr.error` is 1 unless KVM completed the access (an MSR KVM does
/// not know stays #GP); for a read `msr.data` is the value KVM read. Any other exit is left
/// untouched (`MSR_FILTER_OUTCOME_NOT_MSR`). `outcome_out` may be NULL.
///
/// Call it on the vCPU's own thread. Allocates when an MSR and access are seen the first time.
///
/// # Safety
/// `vcpu` a live recorder no other thread uses; `run` a `struct kvm_run` nothing else touches
/// during the call; `outcome_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_vcpu_forward_run(
    vcpu: *mut msr_filter_learner_vcpu,
    run: *mut c_void,
    outcome_out: *mut msr_filter_outcome,
) -> msr_filter_status {
    ffi_boundary!({
        let vcpu = arg_mut!(vcpu);
        // SAFETY: as the caller promises (see above).
        unsafe {
            complete_run(run, outcome_out, |a, r, i, d, e| {
                vcpu.inner.forward_msr(a, r, i, d, e)
            })
        }
    })
}

/// [`msr_filter_learner_vcpu_forward_run`] for an exit given in its parts (QEMU's shape):
/// `is_write` for `KVM_EXIT_X86_WRMSR`, and `kvm_run`'s `msr.reason`, `msr.index`, `&msr.data`
/// and `&msr.error`. `outcome_out` may be NULL.
///
/// # Safety
/// `vcpu` a live recorder no other thread uses; `data` and `error` writable; `outcome_out`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_vcpu_forward_msr(
    vcpu: *mut msr_filter_learner_vcpu,
    is_write: bool,
    reason: u32,
    index: u32,
    data: *mut c_ulonglong,
    error: *mut u8,
    outcome_out: *mut msr_filter_outcome,
) -> msr_filter_status {
    ffi_boundary!({
        let error = arg_mut!(error);
        *error = 1;
        let vcpu = arg_mut!(vcpu);
        // SAFETY: as the caller promises (see above).
        unsafe {
            complete_parts(
                is_write,
                reason,
                index,
                data,
                error,
                outcome_out,
                |a, r, i, d, e| vcpu.inner.forward_msr(a, r, i, d, e),
            )
        }
    })
}

/// Frees a recorder (closing its duplicate of the vCPU fd). NULL is allowed and does nothing.
///
/// # Safety
/// `vcpu` NULL or a live recorder from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learner_vcpu_free(vcpu: *mut msr_filter_learner_vcpu) {
    let _ = ffi_boundary!({
        if !vcpu.is_null() {
            // SAFETY: from `Box::into_raw` in `msr_filter_learner_vcpu_new`, freed once.
            drop(unsafe { Box::from_raw(vcpu) });
        }
        Ok(())
    });
}

/// An empty set of observations. The caller owns `*learned_out` and frees it with
/// `msr_filter_learned_free`.
///
/// # Safety
/// `learned_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learned_new(
    learned_out: *mut *mut msr_filter_learned,
) -> msr_filter_status {
    ffi_boundary!({
        let learned_out = arg_mut!(learned_out);
        *learned_out = Box::into_raw(Box::new(msr_filter_learned {
            inner: Learned::new(),
        }));
        Ok(())
    })
}

/// Adds what `vcpu` recorded (a union: counts add up). Call it once the vCPU's thread no
/// longer uses the recorder.
///
/// # Safety
/// `learned` a live handle no other thread uses; `vcpu` a live recorder no other thread uses
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learned_merge(
    learned: *mut msr_filter_learned,
    vcpu: *const msr_filter_learner_vcpu,
) -> msr_filter_status {
    ffi_boundary!({
        let learned = arg_mut!(learned);
        let vcpu = arg_ref!(vcpu);
        learned.inner.merge(&vcpu.inner);
        Ok(())
    })
}

/// The learned allow-list as a policy handle the caller owns (free it with
/// `msr_filter_policy_free`; pack it, or build a dispatcher from it): `default deny`, an allow
/// rule per run of MSRs KVM completed. `MSR_FILTER_STATUS_PACK_ERROR` (with the message) when it
/// cannot fit 16 ranges.
///
/// # Safety
/// `learned` a live handle; `policy_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learned_policy(
    learned: *const msr_filter_learned,
    policy_out: *mut *mut msr_filter_policy,
) -> msr_filter_status {
    ffi_boundary!({
        let learned = arg_ref!(learned);
        let policy_out = arg_mut!(policy_out);
        *policy_out = std::ptr::null_mut();
        let policy = learned
            .inner
            .policy()
            .map_err(|e| Failure::new(msr_filter_status::PackError, e))?;
        *policy_out = Box::into_raw(Box::new(msr_filter_policy {
            default: Action::Deny,
            rules: policy.rules,
        }));
        Ok(())
    })
}

/// The learned allow-list as policy text (with each MSR's name and counts in comments), copied
/// into `buf` as a NUL-terminated string cut to `len - 1` bytes; `*out_len` is the full text's
/// length (call with `len` 0 and `buf` NULL to learn it: that returns
/// `MSR_FILTER_STATUS_BUFFER_TOO_SMALL`, as for any cut text); `MSR_FILTER_STATUS_PACK_ERROR` when it cannot fit 16 ranges.
///
/// # Safety
/// `learned` a live handle; `buf` writable for `len` bytes (NULL only when `len` is 0);
/// `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learned_policy_text(
    learned: *const msr_filter_learned,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let learned = arg_ref!(learned);
        if out_len.is_null() || (buf.is_null() && len > 0) {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `out_len` is NULL, or `buf` is NULL with `len` > 0",
            ));
        }
        let policy = learned
            .inner
            .policy()
            .map_err(|e| Failure::new(msr_filter_status::PackError, e))?;
        // SAFETY: checked above; the caller promises the buffer and `out_len` writable.
        match unsafe { copy_text(&policy.text, buf, len, out_len) } {
            msr_filter_status::Ok => Ok(()),
            status => Err(Failure::fixed(
                status,
                "the buffer is too small for the policy text",
            )),
        }
    })
}

/// Frees a set of observations. NULL is allowed and does nothing.
///
/// # Safety
/// `learned` NULL or a live handle from this library, not used again.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_learned_free(learned: *mut msr_filter_learned) {
    let _ = ffi_boundary!({
        if !learned.is_null() {
            // SAFETY: from `Box::into_raw` in `msr_filter_learned_new`, freed once.
            drop(unsafe { Box::from_raw(learned) });
        }
        Ok(())
    });
}
