//! The whole path on a VM fd the caller owns: exits enabled before the filter, install, remove,
//! teardown in the safe order, through `msr_filter_kvm::MsrInterception`.

use std::os::fd::RawFd;

use kvm_ioctls::{Kvm, MsrExitReason, VmFd};
use msr_filter_kvm::{KvmError, MsrInterception};

use crate::error::{arg_mut, arg_ref, ffi_boundary, msr_filter_status, Failure};
use crate::filter::msr_filter_filter;

/// A VM's MSR interception (`KVM_CAP_X86_USER_SPACE_MSR` and `KVM_X86_SET_MSR_FILTER`) with the
/// ordering rule enforced: the FILTER exit is enabled before any filter is installed, is never
/// dropped while a filter may be installed, and teardown removes the filter before the exits.
///
/// It works on a duplicate of the caller's VM fd: the caller keeps its fd (and may close it);
/// the VM lives until both are closed. Made by `msr_filter_vm_new`, freed (with teardown) by
/// `msr_filter_vm_free` or `msr_filter_vm_shutdown`.
///
/// Not thread-safe: calls on one handle must not overlap (vCPU threads may keep running).
pub struct msr_filter_vm {
    inner: MsrInterception<VmFd>,
}

impl msr_filter_vm {
    /// The interception, for a live dispatcher to take over.
    pub(crate) fn into_interception(self) -> MsrInterception<VmFd> {
        self.inner
    }
}

impl std::fmt::Debug for msr_filter_vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::fd::AsRawFd;
        f.debug_struct("msr_filter_vm")
            .field("vm_fd", &self.inner.vm().as_raw_fd())
            .field("exits", &self.inner.exit_reasons())
            .field("filter_installed", &self.inner.filter_installed())
            .finish()
    }
}

pub(crate) fn kvm_failure(e: KvmError) -> Failure {
    let status = match e {
        KvmError::MissingCapability { .. } => msr_filter_status::MissingCapability,
        KvmError::FilterExitRequired { .. } => msr_filter_status::FilterExitRequired,
        _ => msr_filter_status::KvmError,
    };
    Failure::new(status, e)
}

fn exit_reasons_from_c(reasons: u32) -> Result<MsrExitReason, Failure> {
    MsrExitReason::from_bits(reasons).ok_or_else(|| {
        Failure::new(
            msr_filter_status::InvalidArgument,
            format_args!("exit reasons {reasons:#x}: only MSR_FILTER_EXIT_REASON_INVAL (1), _UNKNOWN (2) and _FILTER (4) exist"),
        )
    })
}

/// Takes charge of the MSR interception of the VM `vm_fd` (a `KVM_CREATE_VM` fd; the caller
/// keeps ownership of it): checks `KVM_CAP_X86_USER_SPACE_MSR` and `KVM_CAP_X86_MSR_FILTER`
/// (opening `/dev/kvm` to ask), then enables user-space MSR exits for FILTER plus
/// `extra_exit_reasons` (a mask of `msr_filter_exit_reason`: INVAL, UNKNOWN; 0 for none). The
/// caller owns `*vm_out` and frees it with `msr_filter_vm_free` or `msr_filter_vm_shutdown`.
///
/// Until this handle installs or removes a filter it assumes another owner may have installed
/// one. `MSR_FILTER_STATUS_INVALID_ARGUMENT` for a bad fd or mask,
/// `MSR_FILTER_STATUS_MISSING_CAPABILITY`, `MSR_FILTER_STATUS_KVM_ERROR` (e.g. `vm_fd` is not a
/// VM: the message has the errno).
///
/// Thread-safe (no shared state); do it before starting vCPU threads or while they run.
///
/// # Safety
/// `vm_out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_new(
    vm_fd: i32,
    extra_exit_reasons: u32,
    vm_out: *mut *mut msr_filter_vm,
) -> msr_filter_status {
    ffi_boundary!({
        let vm_out = arg_mut!(vm_out);
        *vm_out = std::ptr::null_mut();
        let extra = exit_reasons_from_c(extra_exit_reasons)?;
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor and touches nothing else; an invalid
        // `vm_fd` only makes it fail with EBADF.
        let fd: RawFd = unsafe { libc::fcntl(vm_fd, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Failure::new(
                msr_filter_status::InvalidArgument,
                format_args!(
                    "vm_fd {vm_fd}: cannot duplicate it: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                // SAFETY: the duplicate is ours and not yet owned by anything: close it.
                unsafe { libc::close(fd) };
                return Err(Failure::new(
                    msr_filter_status::KvmError,
                    format_args!("cannot open /dev/kvm to check capabilities: {e}"),
                ));
            }
        };
        // SAFETY: `fd` is a fresh duplicate that nothing else uses; on success the `VmFd` owns
        // and closes it.
        let vm = match unsafe { kvm.create_vmfd_from_rawfd(fd) } {
            Ok(vm) => vm,
            Err(e) => {
                // SAFETY: on failure the duplicate was not taken over: close it here.
                unsafe { libc::close(fd) };
                return Err(Failure::new(
                    msr_filter_status::KvmError,
                    format_args!("KVM_GET_VCPU_MMAP_SIZE failed: {e}"),
                ));
            }
        };
        let inner = MsrInterception::new(&kvm, vm, extra).map_err(kvm_failure)?;
        *vm_out = Box::into_raw(Box::new(msr_filter_vm { inner }));
        Ok(())
    })
}

/// Installs (or atomically replaces) the VM's filter, first re-enabling the FILTER exit if it
/// was dropped. When it returns, every later guest access is judged by the new filter. The
/// kernel copies the filter: it may be freed afterwards.
///
/// Not thread-safe on one `vm` (vCPU threads may keep running). `filter` is only read.
///
/// # Safety
/// `vm` and `filter` must be live handles from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_install(
    vm: *mut msr_filter_vm,
    filter: *const msr_filter_filter,
) -> msr_filter_status {
    ffi_boundary!({
        let vm = arg_mut!(vm);
        let filter = arg_ref!(filter);
        vm.inner.install(&filter.filter).map_err(kvm_failure)?;
        Ok(())
    })
}

/// Removes the filter: every MSR is allowed again. The exits stay enabled.
///
/// Not thread-safe on one `vm`.
///
/// # Safety
/// `vm` must be a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_remove_filter(vm: *mut msr_filter_vm) -> msr_filter_status {
    ffi_boundary!({
        arg_mut!(vm).inner.remove_filter().map_err(kvm_failure)?;
        Ok(())
    })
}

/// Sets the enabled MSR exit reasons to `reasons` (a mask of `msr_filter_exit_reason`).
/// `MSR_FILTER_STATUS_FILTER_EXIT_REQUIRED` when the mask lacks FILTER while a filter is or may
/// be installed (remove it first).
///
/// Not thread-safe on one `vm`.
///
/// # Safety
/// `vm` must be a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_set_exit_reasons(
    vm: *mut msr_filter_vm,
    reasons: u32,
) -> msr_filter_status {
    ffi_boundary!({
        let vm = arg_mut!(vm);
        let reasons = exit_reasons_from_c(reasons)?;
        vm.inner.set_exit_reasons(reasons).map_err(kvm_failure)?;
        Ok(())
    })
}

/// `*reasons_out` = the enabled MSR exit reasons (a mask of `msr_filter_exit_reason`).
///
/// Not thread-safe on one `vm`.
///
/// # Safety
/// `vm` must be a live handle from this library; `reasons_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_exit_reasons(
    vm: *const msr_filter_vm,
    reasons_out: *mut u32,
) -> msr_filter_status {
    ffi_boundary!({
        let vm = arg_ref!(vm);
        let reasons_out = arg_mut!(reasons_out);
        *reasons_out = vm.inner.exit_reasons().bits();
        Ok(())
    })
}

/// `*installed_out` = whether this handle installed a filter that filters (false after
/// `msr_filter_vm_remove_filter`, and before any install).
///
/// Not thread-safe on one `vm`.
///
/// # Safety
/// `vm` must be a live handle from this library; `installed_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_filter_installed(
    vm: *const msr_filter_vm,
    installed_out: *mut bool,
) -> msr_filter_status {
    ffi_boundary!({
        let vm = arg_ref!(vm);
        let installed_out = arg_mut!(installed_out);
        *installed_out = vm.inner.filter_installed();
        Ok(())
    })
}

/// Tears down in the safe order (the filter first, then the exits) and frees the handle,
/// reporting a failed ioctl. The handle is freed in every case except NULL; the caller's fd is
/// untouched.
///
/// # Safety
/// `vm` must be NULL or a live handle from this library, never used again.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_shutdown(vm: *mut msr_filter_vm) -> msr_filter_status {
    ffi_boundary!({
        if vm.is_null() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `vm` is NULL",
            ));
        }
        // SAFETY: the caller hands back a pointer from `Box::into_raw` in this library, which
        // nothing uses any more.
        let vm = unsafe { Box::from_raw(vm) };
        vm.inner.shutdown().map_err(kvm_failure)
    })
}

/// Tears down like `msr_filter_vm_shutdown`, ignoring errors, and frees the handle. NULL is
/// allowed and does nothing.
///
/// # Safety
/// `vm` must be NULL or a live handle from this library, never used again.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_vm_free(vm: *mut msr_filter_vm) {
    let _ = ffi_boundary!({
        if !vm.is_null() {
            // SAFETY: the caller hands back a pointer from `Box::into_raw` in this library,
            // which nothing uses any more; dropping it tears down best-effort.
            drop(unsafe { Box::from_raw(vm) });
        }
        Ok(())
    });
}
