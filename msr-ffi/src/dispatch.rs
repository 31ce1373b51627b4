//! Dispatching MSR exits to C callbacks, through `msr_filter_kvm::Dispatcher`.

use std::ffi::{c_int, c_ulonglong, c_void};
use std::sync::Arc;

use kvm_ioctls::MsrExitReason;
use msr_filter_core::{Access, AccessType, Action, PolicyView, Rule};
use msr_filter_kvm::{
    Dispatch, Dispatcher, DispatcherBuilder, ExitRoute, Fault, MsrContext, MsrHandler, MsrSpan,
};

use crate::error::{arg_mut, arg_ref, ffi_boundary, msr_filter_status, Failure, Outcome};
use crate::filter::msr_filter_filter;
use crate::policy::{msr_filter_policy, out_handle};
use crate::types::{access_from_c, msr_filter_outcome};

/// Reads an MSR for the guest: store the value in `*value` and return 0, or return nonzero to
/// give the guest #GP. `vcpu` is the number the VMM passed to the dispatch call; `opaque` is the
/// pointer given at registration.
///
/// Called on vCPU threads, **possibly on several at once**: the callback must be thread-safe.
/// It must return normally (no `longjmp` out of it) and must not free the dispatcher.
pub type msr_filter_read_cb = Option<
    unsafe extern "C" fn(opaque: *mut c_void, vcpu: u32, index: u32, value: *mut u64) -> c_int,
>;

/// Writes `value` to an MSR for the guest: return 0 to complete the `wrmsr`, nonzero to give the
/// guest #GP. Same rules as `msr_filter_read_cb`: called on vCPU threads, possibly several at
/// once.
pub type msr_filter_write_cb =
    Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: u32, index: u32, value: u64) -> c_int>;

/// A C callback pair as a handler.
#[derive(Debug)]
struct CHandler {
    read: msr_filter_read_cb,
    write: msr_filter_write_cb,
    opaque: *mut c_void,
}

// SAFETY: the registration functions document that the callbacks may run on several threads at
// once with this `opaque`; the caller vouches for that. The handler itself holds no Rust state.
unsafe impl Send for CHandler {}
// SAFETY: as above: `&CHandler` only passes `opaque` to the caller's thread-safe callbacks.
unsafe impl Sync for CHandler {}

impl MsrHandler for CHandler {
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        let Some(read) = self.read else {
            return Err(Fault);
        };
        let mut value = 0u64;
        // SAFETY: the caller registered `read` with `opaque` for exactly this use; `value` is a
        // live local.
        let rc = unsafe { read(self.opaque, ctx.vcpu as u32, ctx.index, &mut value) };
        if rc == 0 {
            Ok(value)
        } else {
            Err(Fault)
        }
    }

    fn write(&self, ctx: &MsrContext, value: u64) -> Result<(), Fault> {
        let Some(write) = self.write else {
            return Err(Fault);
        };
        // SAFETY: the caller registered `write` with `opaque` for exactly this use.
        let rc = unsafe { write(self.opaque, ctx.vcpu as u32, ctx.index, value) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Fault)
        }
    }

    fn kind(&self) -> &'static str {
        "c-callback"
    }
}

#[derive(Debug)]
struct Registration {
    first: u32,
    last: u32,
    access: Access,
    handler: Arc<CHandler>,
}

/// Collects what a dispatcher is made of: a copy of a policy, C callbacks per MSR or range, and
/// routes for exits no callback takes. Made by `msr_filter_dispatcher_builder_new`, freed by
/// `msr_filter_dispatcher_builder_free`; `msr_filter_dispatcher_builder_build` may be called any
/// number of times.
///
/// Not thread-safe for changes: no other thread may use a builder being changed.
#[derive(Debug)]
pub struct msr_filter_dispatcher_builder {
    default: Action,
    rules: Vec<Rule>,
    handlers: Vec<Registration>,
    exit_counters: bool,
    unknown: ExitRoute,
    inval: ExitRoute,
    unhandled: ExitRoute,
}

impl msr_filter_dispatcher_builder {
    /// The Rust builder with every registration made so far, plus `extra`.
    fn rust_builder(
        &self,
        extra: Option<&Registration>,
    ) -> Result<DispatcherBuilder, msr_filter_kvm::BuildError> {
        let policy = PolicyView::new(self.default, &self.rules)
            .map_err(msr_filter_kvm::BuildError::Policy)?;
        let mut builder = Dispatcher::builder(policy)
            .on_unknown(self.unknown.clone())
            .on_inval(self.inval.clone())
            .on_unhandled(self.unhandled.clone())
            .exit_counters(self.exit_counters);
        for r in self.handlers.iter().chain(extra) {
            builder = builder.handle(MsrSpan(r.first, r.last), r.access, Arc::clone(&r.handler))?;
        }
        Ok(builder)
    }

    fn set_routes(&mut self, reasons: u32, route: ExitRoute) -> Result<(), Failure> {
        let reasons = MsrExitReason::from_bits(reasons)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                Failure::new(
                    msr_filter_status::InvalidArgument,
                    format_args!("exit reasons {reasons:#x}: expected a nonzero mask of MSR_FILTER_EXIT_REASON_INVAL (1), _UNKNOWN (2), _FILTER (4)"),
                )
            })?;
        if reasons.contains(MsrExitReason::Unknown) {
            self.unknown = route.clone();
        }
        if reasons.contains(MsrExitReason::Inval) {
            self.inval = route.clone();
        }
        if reasons.contains(MsrExitReason::Filter) {
            self.unhandled = route;
        }
        Ok(())
    }
}

/// Starts a dispatcher from a copy of `policy` (what the kernel should allow or deny before any
/// callback is added). The caller owns `*builder_out` and frees it with
/// `msr_filter_dispatcher_builder_free`; the policy may be freed at once.
///
/// Thread-safe; only reads the policy.
///
/// # Safety
/// `policy` must be a live policy from this library; `builder_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_new(
    policy: *const msr_filter_policy,
    builder_out: *mut *mut msr_filter_dispatcher_builder,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_ref!(policy);
        let builder_out = arg_mut!(builder_out);
        *builder_out = std::ptr::null_mut();
        out_handle(
            builder_out,
            msr_filter_dispatcher_builder {
                default: policy.default,
                rules: policy.rules.clone(),
                handlers: Vec::new(),
                exit_counters: true,
                unknown: ExitRoute::Gp,
                inval: ExitRoute::Gp,
                unhandled: ExitRoute::Gp,
            },
        );
        Ok(())
    })
}

/// Registers C callbacks for `access` (a `msr_filter_access`: READ, WRITE or READ_WRITE) to the
/// MSRs `first..=last` (`first == last` for one MSR). Registering **is** intercepting: the built
/// dispatcher's filter denies those accesses, so each one exits to the callback. `read` must be
/// non-NULL when `access` includes READ, `write` when it includes WRITE (the other may be NULL);
/// `opaque` is passed to them unchanged and may be anything.
///
/// `MSR_FILTER_STATUS_BUILD_ERROR` (the builder unchanged) when the range overlaps another
/// registration for the same access, covers x2APIC MSRs 0x800-0x8ff (the kernel never filters
/// them, so no exit would ever come), or the policy is malformed;
/// `MSR_FILTER_STATUS_INVALID_ARGUMENT` for `first > last` or a bad access.
///
/// The callbacks will run on vCPU threads, **possibly several at once**, for as long as a
/// dispatcher built from this builder lives: they and `opaque` must be thread-safe and stay valid
/// that long. No other thread may use the builder during the call.
///
/// # Safety
/// `builder` must be a live builder from this library; `read`/`write` valid functions or NULL.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_add_handler(
    builder: *mut msr_filter_dispatcher_builder,
    first: u32,
    last: u32,
    access: u32,
    read: msr_filter_read_cb,
    write: msr_filter_write_cb,
    opaque: *mut c_void,
) -> msr_filter_status {
    ffi_boundary!({
        let builder = arg_mut!(builder);
        let access = access_from_c(access)?;
        if first > last {
            return Err(Failure::new(
                msr_filter_status::InvalidArgument,
                format_args!("handler range {first:#x}-{last:#x}: first is after last"),
            ));
        }
        if access.contains(Access::READ) && read.is_none() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `read` is NULL, but the access includes READ",
            ));
        }
        if access.contains(Access::WRITE) && write.is_none() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `write` is NULL, but the access includes WRITE",
            ));
        }
        let registration = Registration {
            first,
            last,
            access,
            handler: Arc::new(CHandler {
                read,
                write,
                opaque,
            }),
        };
        // The Rust builder judges the registration against all the others.
        builder
            .rust_builder(Some(&registration))
            .map_err(|e| Failure::new(msr_filter_status::BuildError, e))?;
        builder.handlers.push(registration);
        Ok(())
    })
}

/// Routes exits no callback takes, for the exit reasons in the mask `reasons`
/// (`msr_filter_exit_reason` bits: INVAL and UNKNOWN exits, and FILTER exits of MSRs the policy
/// denies but no callback takes) to #GP: the default for all three.
///
/// No other thread may use the builder during the call.
///
/// # Safety
/// `builder` must be a live builder from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_route_gp(
    builder: *mut msr_filter_dispatcher_builder,
    reasons: u32,
) -> msr_filter_status {
    ffi_boundary!({ arg_mut!(builder).set_routes(reasons, ExitRoute::Gp) })
}

/// Routes exits no callback takes, for the exit reasons in `reasons`, to a constant: reads
/// return `value`, writes are dropped. `MSR_FILTER_EXIT_REASON_UNKNOWN` with 0 is the per-VM
/// `kvm.ignore_msrs=1` (it needs the UNKNOWN exit enabled on the VM).
///
/// No other thread may use the builder during the call.
///
/// # Safety
/// `builder` must be a live builder from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_route_value(
    builder: *mut msr_filter_dispatcher_builder,
    reasons: u32,
    value: u64,
) -> msr_filter_status {
    ffi_boundary!({ arg_mut!(builder).set_routes(reasons, ExitRoute::Value(value)) })
}

/// Routes exits no callback takes, for the exit reasons in `reasons`, to C callbacks (either
/// may be NULL: that access then gets #GP). Same thread rules as
/// `msr_filter_dispatcher_builder_add_handler`: the callbacks may run on several vCPU threads at
/// once.
///
/// # Safety
/// `builder` must be a live builder from this library; `read`/`write` valid functions or NULL.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_route_callbacks(
    builder: *mut msr_filter_dispatcher_builder,
    reasons: u32,
    read: msr_filter_read_cb,
    write: msr_filter_write_cb,
    opaque: *mut c_void,
) -> msr_filter_status {
    ffi_boundary!({
        let handler = Arc::new(CHandler {
            read,
            write,
            opaque,
        });
        arg_mut!(builder).set_routes(reasons, ExitRoute::Handler(handler))
    })
}

/// Whether dispatchers built from now on count each callback registration's exits (`count`
/// true, the default) or not (false). The counts cost one memory write per handled exit;
/// without them `msr_filter_dispatcher_handler_stats` reports 0 reads, writes and faults.
/// Exits no callback takes are counted either way (`msr_filter_dispatcher_route_stats`), and
/// what the guest sees never changes.
///
/// No other thread may use the builder during the call.
///
/// # Safety
/// `builder` must be a live builder from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_exit_counters(
    builder: *mut msr_filter_dispatcher_builder,
    count: bool,
) -> msr_filter_status {
    ffi_boundary!({
        arg_mut!(builder).exit_counters = count;
        Ok(())
    })
}

/// Builds a dispatcher: packs the policy plus a deny for every registered access into its filter
/// (`msr_filter_dispatcher_filter`). The caller owns `*dispatcher_out` and frees it with
/// `msr_filter_dispatcher_free`; the builder stays usable and owned by the caller.
///
/// `MSR_FILTER_STATUS_BUILD_ERROR` when the policy plus the intercepts cannot be packed (the
/// message says why). Only reads the builder. Uses at most 256 KiB of the calling thread's stack
/// in a release build (512 KiB in a build with debug assertions); `tests/stack.rs` runs it on a
/// thread of exactly that stack.
///
/// # Safety
/// `builder` must be a live builder from this library; `dispatcher_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_build(
    builder: *const msr_filter_dispatcher_builder,
    dispatcher_out: *mut *mut msr_filter_dispatcher,
) -> msr_filter_status {
    ffi_boundary!({
        let builder = arg_ref!(builder);
        let dispatcher_out = arg_mut!(dispatcher_out);
        *dispatcher_out = std::ptr::null_mut();
        let dispatcher = builder
            .rust_builder(None)
            .and_then(DispatcherBuilder::build)
            .map_err(|e| Failure::new(msr_filter_status::BuildError, e))?;
        out_handle(dispatcher_out, msr_filter_dispatcher { inner: dispatcher });
        Ok(())
    })
}

/// Frees a builder. NULL is allowed and does nothing. Dispatchers built from it stay valid.
///
/// # Safety
/// `builder` must be NULL or a live builder from this library that no thread uses any more.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_builder_free(
    builder: *mut msr_filter_dispatcher_builder,
) {
    let _ = ffi_boundary!({
        if !builder.is_null() {
            // SAFETY: the caller hands back a pointer from `Box::into_raw` in this library,
            // which nothing uses any more.
            drop(unsafe { Box::from_raw(builder) });
        }
        Ok(())
    });
}

/// Routes MSR exits to the registered C callbacks and fails closed: an exit nobody takes is
/// #GP unless routed otherwise. Share one dispatcher between all vCPU threads: dispatching takes
/// no lock and allocates nothing, and statistics are lock-free counters. Freed by
/// `msr_filter_dispatcher_free` once no thread dispatches any more.
#[derive(Debug)]
pub struct msr_filter_dispatcher {
    pub(crate) inner: Dispatcher,
}

/// `*filter_out` = a copy of the dispatcher's filter (the policy with every handled access
/// denied), to install with `msr_filter_vm_install` or to export as `struct kvm_msr_filter`.
/// The caller owns it and frees it with `msr_filter_filter_free`; its `proven_minimal` is false
/// (not recorded).
///
/// Thread-safe.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `filter_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_filter(
    dispatcher: *const msr_filter_dispatcher,
    filter_out: *mut *mut msr_filter_filter,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        let filter_out = arg_mut!(filter_out);
        *filter_out = msr_filter_filter::new_handle(dispatcher.inner.filter().clone(), false);
        Ok(())
    })
}

/// `*reasons_out` = the MSR exit reasons the dispatcher needs enabled on the VM (a mask of
/// `msr_filter_exit_reason`): FILTER when its filter filters, UNKNOWN and INVAL when their
/// route is not the default #GP. Pass them to `msr_filter_vm_new` or
/// `msr_filter_vm_set_exit_reasons` (`msr_filter_live` enables them itself).
///
/// Thread-safe.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `reasons_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_exit_reasons(
    dispatcher: *const msr_filter_dispatcher,
    reasons_out: *mut u32,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        let reasons_out = arg_mut!(reasons_out);
        *reasons_out = dispatcher.inner.exit_reasons().bits();
        Ok(())
    })
}

pub(crate) fn outcome(done: Dispatch) -> msr_filter_outcome {
    match done {
        Dispatch::NotMsr => msr_filter_outcome::NotMsr,
        Dispatch::Msr { fault: false, .. } => msr_filter_outcome::Completed,
        Dispatch::Msr { fault: true, .. } => msr_filter_outcome::Gp,
    }
}

/// What every `*_dispatch_run` entry point does once it has its handle: decodes the exit in
/// `run` and, for an MSR exit, has `complete` complete it; writes the outcome.
///
/// # Safety
/// `run` NULL (refused here) or a `struct kvm_run` nothing else touches during the call;
/// `outcome_out` NULL or writable.
pub(crate) unsafe fn complete_run(
    run: *mut c_void,
    outcome_out: *mut msr_filter_outcome,
    complete: impl FnOnce(AccessType, MsrExitReason, u32, &mut u64, &mut u8) -> Dispatch,
) -> Outcome {
    if run.is_null() {
        return Err(Failure::fixed(
            msr_filter_status::NullArgument,
            "argument `run` is NULL",
        ));
    }
    // SAFETY: the caller promises a `struct kvm_run` it does not touch during the call.
    let done = match unsafe { RunExit::of(run) } {
        None => msr_filter_outcome::NotMsr,
        Some(e) => outcome(complete(
            e.access,
            MsrExitReason::from_bits_retain(e.reason),
            e.index,
            e.data,
            e.error,
        )),
    };
    // SAFETY: NULL or writable, as the caller promises.
    if let Some(o) = unsafe { outcome_out.as_mut() } {
        *o = done;
    }
    Ok(())
}

/// What every `*_dispatch_msr` entry point does once it has failed closed (`*error = 1`) and
/// has its handle: checks `data`, has `complete` complete the exit, writes the outcome.
///
/// # Safety
/// `data` NULL (refused here) or writable and not used by another thread during the call;
/// `outcome_out` NULL or writable.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn complete_parts(
    is_write: bool,
    reason: u32,
    index: u32,
    data: *mut c_ulonglong,
    error: &mut u8,
    outcome_out: *mut msr_filter_outcome,
    complete: impl FnOnce(AccessType, MsrExitReason, u32, &mut u64, &mut u8) -> Dispatch,
) -> Outcome {
    let data = arg_mut!(data);
    let access = if is_write {
        AccessType::Write
    } else {
        AccessType::Read
    };
    let done = complete(
        access,
        MsrExitReason::from_bits_retain(reason),
        index,
        data,
        error,
    );
    // SAFETY: NULL or writable, as the caller promises.
    if let Some(o) = unsafe { outcome_out.as_mut() } {
        *o = outcome(done);
    }
    Ok(())
}

/// `KVM_EXIT_X86_RDMSR`.
pub const MSR_FILTER_KVM_EXIT_X86_RDMSR: u32 = 29;
/// `KVM_EXIT_X86_WRMSR`.
pub const MSR_FILTER_KVM_EXIT_X86_WRMSR: u32 = 30;
/// Offset of `exit_reason` in `struct kvm_run`.
const RUN_EXIT_REASON: usize = 8;
/// Offsets of the `msr` member's fields in `struct kvm_run`.
const RUN_MSR_ERROR: usize = 32;
const RUN_MSR_REASON: usize = 40;
const RUN_MSR_INDEX: usize = 44;
const RUN_MSR_DATA: usize = 48;

const _: () = {
    use kvm_bindings::{kvm_run, kvm_run__bindgen_ty_1};
    assert!(std::mem::offset_of!(kvm_run, exit_reason) == RUN_EXIT_REASON);
    assert!(std::mem::offset_of!(kvm_run, __bindgen_anon_1) == RUN_MSR_ERROR);
    assert!(std::mem::size_of::<kvm_run__bindgen_ty_1>() >= RUN_MSR_DATA + 8 - RUN_MSR_ERROR);
    assert!(kvm_bindings::KVM_EXIT_X86_RDMSR == MSR_FILTER_KVM_EXIT_X86_RDMSR);
    assert!(kvm_bindings::KVM_EXIT_X86_WRMSR == MSR_FILTER_KVM_EXIT_X86_WRMSR);
};

/// The `msr` member of a `struct kvm_run` holding an MSR exit.
pub(crate) struct RunExit<'a> {
    pub(crate) access: AccessType,
    pub(crate) reason: u32,
    pub(crate) index: u32,
    pub(crate) data: &'a mut u64,
    pub(crate) error: &'a mut u8,
}

impl RunExit<'_> {
    /// Reads `exit_reason` at offset 8 and, for `KVM_EXIT_X86_RDMSR`/`WRMSR`, borrows the `msr`
    /// member at offset 32 (`u8 error; u8 pad[7]; u32 reason; u32 index; u64 data;`).
    ///
    /// # Safety
    /// `run` must point to a `struct kvm_run` that nothing else touches while the result lives.
    pub(crate) unsafe fn of<'a>(run: *mut c_void) -> Option<RunExit<'a>> {
        let run = run.cast::<u8>();
        // SAFETY: `run` points to a `struct kvm_run` (8-aligned), whose u32 `exit_reason` is at
        // offset 8.
        let exit_reason = unsafe { run.add(RUN_EXIT_REASON).cast::<u32>().read() };
        let access = match exit_reason {
            MSR_FILTER_KVM_EXIT_X86_RDMSR => AccessType::Read,
            MSR_FILTER_KVM_EXIT_X86_WRMSR => AccessType::Write,
            _ => return None,
        };
        // SAFETY: for an MSR exit the union holds the `msr` member at offset 32, each field
        // aligned; the caller gives exclusive access to the structure, so the two `&mut` alias
        // nothing.
        unsafe {
            Some(RunExit {
                access,
                reason: run.add(RUN_MSR_REASON).cast::<u32>().read(),
                index: run.add(RUN_MSR_INDEX).cast::<u32>().read(),
                data: &mut *run.add(RUN_MSR_DATA).cast::<u64>(),
                error: &mut *run.add(RUN_MSR_ERROR),
            })
        }
    }
}

/// Handles the exit in `run` (a `struct kvm_run *`, as mmap'ed from the vCPU fd) for vCPU
/// number `vcpu`: for `KVM_EXIT_X86_RDMSR`/`WRMSR`, calls the callback (or route) and completes
/// the exit: `msr.error` is set to 1 before anything runs and to 0 only when a callback or route
/// succeeds; for a read `msr.data` is the value read. Any other exit is left untouched
/// (`*outcome_out` = `MSR_FILTER_OUTCOME_NOT_MSR`). `outcome_out` may be NULL.
///
/// Call it on the vCPU's thread after `KVM_RUN` returns, then re-enter the vCPU. Thread-safe:
/// any number of vCPU threads may dispatch on one dispatcher at once, so **callbacks run
/// concurrently**. Allocates nothing and takes no lock (an exit nobody takes may be logged through
/// the Rust `log` facade, at most once a second).
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `run` must point to a `struct
/// kvm_run` no other thread touches during the call; `outcome_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_dispatch_run(
    dispatcher: *const msr_filter_dispatcher,
    vcpu: u32,
    run: *mut c_void,
    outcome_out: *mut msr_filter_outcome,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        // SAFETY: as the caller promises (see above).
        unsafe {
            complete_run(run, outcome_out, |a, r, i, d, e| {
                dispatcher.inner.dispatch_msr(vcpu as usize, a, r, i, d, e)
            })
        }
    })
}

/// Completes an MSR exit given in its parts, for VMMs with exit handling of their own (QEMU's
/// shape): `is_write` (`KVM_EXIT_X86_WRMSR`), and the `reason`, `index`, `data` and `error`
/// fields of `kvm_run`'s `msr` member, as pointers into it (`data` is `unsigned long long *`,
/// the kernel's `__u64`, so that `&run->msr.data` passes without a cast). `*error` is set to 1 before
/// anything else (even when another argument is NULL), then to 0 only when a callback or route
/// succeeds; for a read `*data` is the value read. `outcome_out` may be NULL.
///
/// Thread-safe like `msr_filter_dispatcher_dispatch_run`: callbacks may run on several vCPU
/// threads at once. Allocates nothing and takes no lock.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `data` and `error` writable and not
/// used by another thread during the call; `outcome_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_dispatch_msr(
    dispatcher: *const msr_filter_dispatcher,
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
        // Fail closed before anything can go wrong.
        *error = 1;
        let dispatcher = arg_ref!(dispatcher);
        // SAFETY: as the caller promises (see above).
        unsafe {
            complete_parts(
                is_write,
                reason,
                index,
                data,
                error,
                outcome_out,
                |a, r, i, d, e| dispatcher.inner.dispatch_msr(vcpu as usize, a, r, i, d, e),
            )
        }
    })
}

/// One callback registration's counters (see `msr_filter_dispatcher_handler_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct msr_filter_handler_stats {
    /// First MSR it takes.
    pub first: u32,
    /// Last MSR it takes.
    pub last: u32,
    /// The accesses it takes (a `msr_filter_access`).
    pub access: u32,
    /// Read exits it handled.
    pub reads: u64,
    /// Write exits it handled.
    pub writes: u64,
    /// Of those, how many it refused (#GP).
    pub faults: u64,
}

/// Counters of exits no callback took (see `msr_filter_dispatcher_route_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct msr_filter_route_stats {
    /// Exits with reason UNKNOWN.
    pub unknown: u64,
    /// Exits with reason INVAL.
    pub inval: u64,
    /// FILTER exits of MSRs no callback takes.
    pub unhandled: u64,
    /// Of all of them, how many ended in #GP.
    pub faults: u64,
    /// Route exits of MSRs past the first 256 distinct ones, not counted per MSR.
    pub untracked: u64,
}

/// Route exits of one MSR (see `msr_filter_dispatcher_route_msr_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct msr_filter_route_msr_stats {
    /// The MSR.
    pub index: u32,
    /// Read exits no callback took.
    pub reads: u64,
    /// Write exits no callback took.
    pub writes: u64,
}

pub(crate) fn handler_stats_of(
    d: &Dispatcher,
    index: usize,
) -> Result<msr_filter_handler_stats, Failure> {
    let all = d.handler_stats();
    let s = all.get(index).ok_or_else(|| {
        Failure::new(
            msr_filter_status::OutOfRange,
            format_args!("handler {index} asked for, but there are {}", all.len()),
        )
    })?;
    Ok(msr_filter_handler_stats {
        first: s.first,
        last: s.last,
        access: s.access.bits(),
        reads: s.reads,
        writes: s.writes,
        faults: s.faults,
    })
}

pub(crate) fn route_stats_of(d: &Dispatcher) -> msr_filter_route_stats {
    let s = d.route_stats();
    msr_filter_route_stats {
        unknown: s.unknown,
        inval: s.inval,
        unhandled: s.unhandled,
        faults: s.faults,
        untracked: s.untracked,
    }
}

/// `*count_out` = the number of callback registrations.
///
/// Thread-safe.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `count_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_handler_count(
    dispatcher: *const msr_filter_dispatcher,
    count_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        let count_out = arg_mut!(count_out);
        *count_out = dispatcher.inner.handler_stats().len();
        Ok(())
    })
}

/// `*stats_out` = the counters of registration number `index`, **in MSR order** (by `first`),
/// not registration order. `MSR_FILTER_STATUS_OUT_OF_RANGE` past the last one.
///
/// Thread-safe: may run while vCPU threads dispatch (each counter is read atomically; the set
/// is not a snapshot). Allocates.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `stats_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_handler_stats(
    dispatcher: *const msr_filter_dispatcher,
    index: usize,
    stats_out: *mut msr_filter_handler_stats,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        let stats_out = arg_mut!(stats_out);
        *stats_out = handler_stats_of(&dispatcher.inner, index)?;
        Ok(())
    })
}

/// `*stats_out` = the counters of exits no callback took.
///
/// Thread-safe: may run while vCPU threads dispatch.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `stats_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_route_stats(
    dispatcher: *const msr_filter_dispatcher,
    stats_out: *mut msr_filter_route_stats,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        let stats_out = arg_mut!(stats_out);
        *stats_out = route_stats_of(&dispatcher.inner);
        Ok(())
    })
}

/// Copies the per-MSR counters of exits no callback took, in MSR order, into `stats` (room for
/// `capacity` entries; may be NULL when `capacity` is 0); `*count_out` = how many there are in
/// all. `MSR_FILTER_STATUS_BUFFER_TOO_SMALL` when they did not all fit (the first `capacity`
/// were written).
///
/// Thread-safe: may run while vCPU threads dispatch. Allocates.
///
/// # Safety
/// `dispatcher` must be a live dispatcher from this library; `stats` writable for `capacity`
/// entries; `count_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_route_msr_stats(
    dispatcher: *const msr_filter_dispatcher,
    stats: *mut msr_filter_route_msr_stats,
    capacity: usize,
    count_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let dispatcher = arg_ref!(dispatcher);
        let count_out = arg_mut!(count_out);
        if stats.is_null() && capacity > 0 {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `stats` is NULL with a nonzero capacity",
            ));
        }
        let all = dispatcher.inner.route_msr_stats();
        *count_out = all.len();
        for (i, s) in all.iter().take(capacity).enumerate() {
            // SAFETY: `i < capacity` and the caller gives `capacity` writable entries.
            unsafe {
                stats.add(i).write(msr_filter_route_msr_stats {
                    index: s.index,
                    reads: s.reads,
                    writes: s.writes,
                })
            };
        }
        if all.len() > capacity {
            return Err(Failure::new(
                msr_filter_status::BufferTooSmall,
                format_args!(
                    "{} MSRs have route counters; room was given for {capacity}",
                    all.len()
                ),
            ));
        }
        Ok(())
    })
}

/// Frees a dispatcher. NULL is allowed and does nothing.
///
/// # Safety
/// `dispatcher` must be NULL or a live dispatcher from this library on which no thread
/// dispatches any more and none will.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_dispatcher_free(dispatcher: *mut msr_filter_dispatcher) {
    let _ = ffi_boundary!({
        if !dispatcher.is_null() {
            // SAFETY: the caller hands back a pointer from `Box::into_raw` in this library,
            // which nothing uses any more.
            drop(unsafe { Box::from_raw(dispatcher) });
        }
        Ok(())
    });
}
