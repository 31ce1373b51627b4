//! Replacing the dispatcher and the kernel filter while vCPU threads run, through
//! `msr_filter_kvm::LiveDispatcher` (the live-swap protocol: generations, per-vCPU epochs, a
//! grace period before a retired dispatcher is freed).

use std::ffi::{c_ulonglong, c_void};

use kvm_ioctls::VmFd;
use msr_filter_kvm::LiveDispatcher;

use crate::dispatch::{
    complete_parts, complete_run, handler_stats_of, msr_filter_dispatcher,
    msr_filter_handler_stats, msr_filter_route_stats, route_stats_of,
};
use crate::error::{arg_mut, arg_ref, ffi_boundary, msr_filter_status, Failure};
use crate::types::msr_filter_outcome;
use crate::vm::{kvm_failure, msr_filter_vm};

/// A dispatcher that can be replaced, with its filter, while vCPU threads run: it owns the VM's
/// interception (so every replacement keeps the ordering rule) and the dispatchers. Every MSR
/// exit is served by the handler the old or the new dispatcher gives its MSR; none is lost to a
/// replacement, and a failed replacement leaves the old dispatcher and filter in force.
///
/// Made by `msr_filter_live_new`, freed (with teardown) by `msr_filter_live_free` or
/// `msr_filter_live_shutdown`. Thread-safe: vCPU threads call `msr_filter_live_enter_run`
/// and the dispatch functions while any thread replaces (replacements are serialised).
pub struct msr_filter_live {
    inner: LiveDispatcher<VmFd>,
    vcpus: usize,
}

impl std::fmt::Debug for msr_filter_live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("msr_filter_live")
            .field("inner", &self.inner)
            .field("vcpus", &self.vcpus)
            .finish()
    }
}

impl msr_filter_live {
    fn vcpu(&self, vcpu: u32) -> Result<usize, Failure> {
        let v = vcpu as usize;
        if v < self.vcpus {
            Ok(v)
        } else {
            Err(Failure::fixed(
                msr_filter_status::InvalidArgument,
                "`vcpu` is not below the vCPU count given to msr_filter_live_new",
            ))
        }
    }
}

/// Takes over `vm` (its interception) and `first`, installs `first`'s filter (enabling the exit
/// reasons it needs first) and serves vCPUs `0 .. vcpus - 1`. The caller owns `*live_out` and
/// frees it with `msr_filter_live_free` or `msr_filter_live_shutdown`.
///
/// **Takes ownership of `vm` and `first` in every case** (unless a pointer argument is NULL):
/// never use or free them again; on failure they are torn down and freed.
/// `MSR_FILTER_STATUS_KVM_ERROR` when the install fails.
///
/// Call it before the vCPU threads start using the returned handle.
///
/// # Safety
/// `vm` and `first` must be live handles from this library that no other thread uses;
/// `live_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_new(
    vm: *mut msr_filter_vm,
    vcpus: usize,
    first: *mut msr_filter_dispatcher,
    live_out: *mut *mut msr_filter_live,
) -> msr_filter_status {
    ffi_boundary!({
        let live_out = arg_mut!(live_out);
        *live_out = std::ptr::null_mut();
        if vm.is_null() || first.is_null() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `vm` or `first` is NULL",
            ));
        }
        // SAFETY: both come from `Box::into_raw` in this library and are handed over.
        let (vm, first) = unsafe { (Box::from_raw(vm), Box::from_raw(first)) };
        let inner =
            LiveDispatcher::new(vm.into_interception(), vcpus, first.inner).map_err(kvm_failure)?;
        *live_out = Box::into_raw(Box::new(msr_filter_live { inner, vcpus }));
        Ok(())
    })
}

/// Right before **every** `KVM_RUN` of vCPU `vcpu`, on its thread: the quiescent point that lets
/// retired dispatchers be freed. Two atomic loads and a store; no lock, no allocation.
/// `MSR_FILTER_STATUS_INVALID_ARGUMENT` for a vCPU number out of range.
///
/// Thread-safe: each vCPU thread calls it for its own vCPU.
///
/// # Safety
/// `live` must be a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_enter_run(
    live: *const msr_filter_live,
    vcpu: u32,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        live.inner.enter_run(live.vcpu(vcpu)?);
        Ok(())
    })
}

/// vCPU `vcpu` stops running (paused or done) holding no exit: it no longer delays the
/// freeing of retired dispatchers. Call `msr_filter_live_enter_run` again before its next
/// `KVM_RUN`.
///
/// Thread-safe.
///
/// # Safety
/// `live` must be a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_leave_run(
    live: *const msr_filter_live,
    vcpu: u32,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        live.inner.leave_run(live.vcpu(vcpu)?);
        Ok(())
    })
}

/// Like `msr_filter_dispatcher_dispatch_run`, with the dispatcher that serves this exit (the
/// newest of those the exit may come from that handles its MSR). Fails closed; allocates nothing;
/// takes no lock. Callbacks may run on several vCPU threads at once.
///
/// # Safety
/// `live` must be a live handle from this library; `run` a `struct kvm_run` no other thread
/// touches during the call; `outcome_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_dispatch_run(
    live: *const msr_filter_live,
    vcpu: u32,
    run: *mut c_void,
    outcome_out: *mut msr_filter_outcome,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        // SAFETY: as the caller promises (see above).
        unsafe {
            complete_run(run, outcome_out, |a, r, i, d, e| {
                live.inner.dispatch_msr(vcpu as usize, a, r, i, d, e)
            })
        }
    })
}

/// Like `msr_filter_dispatcher_dispatch_msr` (QEMU's shape), with the dispatcher that serves
/// this exit. `*error` is set to 1 before anything else; a vCPU number out of range gets #GP.
/// Allocates nothing; takes no lock. Callbacks may run on several vCPU threads at once.
///
/// # Safety
/// `live` must be a live handle from this library; `data` and `error` writable and not used by
/// another thread during the call; `outcome_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_dispatch_msr(
    live: *const msr_filter_live,
    vcpu: u32,
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
        let live = arg_ref!(live);
        // SAFETY: as the caller promises (see above).
        unsafe {
            complete_parts(
                is_write,
                reason,
                index,
                data,
                error,
                outcome_out,
                |a, r, i, d, e| live.inner.dispatch_msr(vcpu as usize, a, r, i, d, e),
            )
        }
    })
}

/// Replaces the dispatcher and the kernel filter while vCPUs run: enables any exit reason
/// `next` needs, publishes it, installs its filter (`KVM_X86_SET_MSR_FILTER`), then frees what
/// no vCPU can still reach. Never waits for vCPUs. `*generation_out` (may be NULL) receives the
/// new dispatcher's generation (the first one is 1).
///
/// **Takes ownership of `next` in every case** (unless `live` is NULL): never use or free it
/// again. `MSR_FILTER_STATUS_KVM_ERROR` when the ioctl fails: the old dispatcher and filter
/// then stay fully in force.
///
/// Thread-safe: any thread, while vCPU threads dispatch; replacements are serialised.
///
/// # Safety
/// `live` must be a live handle from this library; `next` a live dispatcher from this library
/// that no other thread uses; `generation_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_replace(
    live: *const msr_filter_live,
    next: *mut msr_filter_dispatcher,
    generation_out: *mut u64,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        if next.is_null() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `next` is NULL",
            ));
        }
        // SAFETY: from `Box::into_raw` in this library, handed over.
        let next = unsafe { Box::from_raw(next) };
        let replaced = live.inner.replace(next.inner).map_err(kvm_failure)?;
        // SAFETY: NULL or writable, as the caller promises.
        if let Some(g) = unsafe { generation_out.as_mut() } {
            *g = replaced.generation;
        }
        Ok(())
    })
}

/// `*generation_out` = the installed generation (1 for the first dispatcher; failed
/// replacements count too).
///
/// Thread-safe.
///
/// # Safety
/// `live` must be a live handle from this library; `generation_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_generation(
    live: *const msr_filter_live,
    generation_out: *mut u64,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        let generation_out = arg_mut!(generation_out);
        *generation_out = live.inner.generation();
        Ok(())
    })
}

/// Frees the retired dispatchers no vCPU can reach any more; `*retired_out` (may be NULL) =
/// how many remain (held by vCPUs inside `KVM_RUN` since before the last replacement: kick
/// them out of `KVM_RUN` with a signal to let them pass).
///
/// Thread-safe.
///
/// # Safety
/// `live` must be a live handle from this library; `retired_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_reclaim(
    live: *const msr_filter_live,
    retired_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        let retired = live.inner.reclaim();
        // SAFETY: NULL or writable, as the caller promises.
        if let Some(r) = unsafe { retired_out.as_mut() } {
            *r = retired;
        }
        Ok(())
    })
}

/// `*count_out` = the number of callback registrations of the installed dispatcher.
///
/// Thread-safe (takes a lock; not for the vCPU path).
///
/// # Safety
/// `live` must be a live handle from this library; `count_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_handler_count(
    live: *const msr_filter_live,
    count_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        let count_out = arg_mut!(count_out);
        *count_out = live.inner.with_current(|d| d.handler_stats().len());
        Ok(())
    })
}

/// `*stats_out` = the counters of registration number `index` (in MSR order) of the installed
/// dispatcher, counting exits since it was built. `MSR_FILTER_STATUS_OUT_OF_RANGE` past the
/// last one.
///
/// Thread-safe (takes a lock; not for the vCPU path).
///
/// # Safety
/// `live` must be a live handle from this library; `stats_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_handler_stats(
    live: *const msr_filter_live,
    index: usize,
    stats_out: *mut msr_filter_handler_stats,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        let stats_out = arg_mut!(stats_out);
        *stats_out = live.inner.with_current(|d| handler_stats_of(d, index))?;
        Ok(())
    })
}

/// `*stats_out` = the installed dispatcher's counters of exits no callback took.
///
/// Thread-safe (takes a lock; not for the vCPU path).
///
/// # Safety
/// `live` must be a live handle from this library; `stats_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_route_stats(
    live: *const msr_filter_live,
    stats_out: *mut msr_filter_route_stats,
) -> msr_filter_status {
    ffi_boundary!({
        let live = arg_ref!(live);
        let stats_out = arg_mut!(stats_out);
        *stats_out = live.inner.with_current(route_stats_of);
        Ok(())
    })
}

/// Tears down in the safe order (the filter first, then the exits) and frees the handle and its
/// dispatchers, reporting a failed ioctl. The handle is freed in every case except NULL.
///
/// # Safety
/// `live` must be NULL or a live handle from this library that no thread uses any more (every
/// vCPU thread has stopped dispatching).
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_shutdown(live: *mut msr_filter_live) -> msr_filter_status {
    ffi_boundary!({
        if live.is_null() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `live` is NULL",
            ));
        }
        // SAFETY: from `Box::into_raw` in this library; nothing uses it any more.
        let live = unsafe { Box::from_raw(live) };
        live.inner
            .into_interception()
            .shutdown()
            .map_err(kvm_failure)
    })
}

/// Tears down like `msr_filter_live_shutdown`, ignoring errors, and frees the handle. NULL is
/// allowed and does nothing.
///
/// # Safety
/// `live` must be NULL or a live handle from this library that no thread uses any more.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_live_free(live: *mut msr_filter_live) {
    let _ = ffi_boundary!({
        if !live.is_null() {
            // SAFETY: from `Box::into_raw` in this library; nothing uses it any more.
            drop(unsafe { Box::from_raw(live) });
        }
        Ok(())
    });
}
