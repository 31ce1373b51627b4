//! Owning a VM's MSR interception, with the ordering rule enforced.

use std::borrow::Borrow;
use std::fmt;

use kvm_bindings::{kvm_enable_cap, KVM_CAP_X86_MSR_FILTER, KVM_CAP_X86_USER_SPACE_MSR};
use kvm_ioctls::{Cap, Kvm, MsrExitReason, VmFd};
use msr_filter_core::{Filter, Lints};
use vmm_sys_util::errno;

use crate::convert::KvmFilter;

/// Why an interception call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum KvmError {
    /// The kernel lacks a capability this needs.
    MissingCapability {
        /// The capability's kernel name.
        name: &'static str,
        /// Its number.
        number: u32,
    },
    /// The FILTER exit reason cannot be dropped while a filter is installed: denied accesses
    /// would silently become #GP in the guest.
    FilterExitRequired {
        /// The exit reasons asked for.
        asked: MsrExitReason,
    },
    /// An ioctl failed.
    Ioctl {
        /// Which ioctl.
        what: &'static str,
        /// The errno.
        err: errno::Error,
    },
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmError::MissingCapability { name, number } => write!(
                f,
                "this kernel's KVM lacks {name} (capability {number}), which MSR filtering needs"
            ),
            KvmError::FilterExitRequired { asked } => write!(
                f,
                "cannot set MSR exit reasons to {asked:?} while a filter is installed: without the FILTER reason the kernel turns every denied access into #GP; remove the filter first"
            ),
            KvmError::Ioctl { what, err } => write!(f, "{what} failed: {err}"),
        }
    }
}

impl std::error::Error for KvmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KvmError::Ioctl { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// The owner of one VM's MSR interception (`KVM_CAP_X86_USER_SPACE_MSR` and
/// `KVM_X86_SET_MSR_FILTER`), enforcing the ordering rule the kernel does not:
///
/// 1. [`new`](Self::new) checks both capabilities and enables user-space MSR exits with the
///    FILTER reason (plus any others asked for) before any filter can exist;
/// 2. [`set_exit_reasons`](Self::set_exit_reasons) refuses to drop FILTER while a filter is
///    installed;
/// 3. [`shutdown`](Self::shutdown) (or drop) removes the filter first, then disables the exits.
///
/// So a denied access always reaches user space as a FILTER exit, never a silent #GP. Holds the VM
/// as `V`: `&VmFd`, `VmFd`, `Arc<VmFd>`, ...
pub struct MsrInterception<V: Borrow<VmFd>> {
    vm: V,
    exits: MsrExitReason,
    filter: FilterState,
    shut_down: bool,
}

impl<V: Borrow<VmFd>> std::fmt::Debug for MsrInterception<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::fd::AsRawFd;
        f.debug_struct("MsrInterception")
            .field("vm_fd", &self.vm.borrow().as_raw_fd())
            .field("exits", &self.exits)
            .field("filter", &self.filter)
            .field("shut_down", &self.shut_down)
            .finish()
    }
}

/// What this owner knows of the VM's filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterState {
    /// Not yet installed or removed through this owner: another owner, or code using the VM fd
    /// directly, may have installed one, so FILTER exits must stay enabled.
    Unknown,
    /// No filter: every MSR is allowed.
    None,
    /// A filter that filters.
    Installed,
}

fn enable_exits(vm: &VmFd, reasons: MsrExitReason) -> Result<(), KvmError> {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(reasons.bits());
    vm.enable_cap(&cap).map_err(|err| KvmError::Ioctl {
        what: "KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)",
        err,
    })
}

impl<V: Borrow<VmFd>> MsrInterception<V> {
    /// Checks `KVM_CAP_X86_USER_SPACE_MSR` and `KVM_CAP_X86_MSR_FILTER`, then enables user-space
    /// MSR exits for FILTER plus `extra` (INVAL and/or UNKNOWN).
    pub fn new(kvm: &Kvm, vm: V, extra: MsrExitReason) -> Result<Self, KvmError> {
        for (cap, name, number) in [
            (
                Cap::X86UserSpaceMsr,
                "KVM_CAP_X86_USER_SPACE_MSR",
                KVM_CAP_X86_USER_SPACE_MSR,
            ),
            (
                Cap::X86MsrFilter,
                "KVM_CAP_X86_MSR_FILTER",
                KVM_CAP_X86_MSR_FILTER,
            ),
        ] {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCapability { name, number });
            }
        }
        let exits = extra | MsrExitReason::Filter;
        enable_exits(vm.borrow(), exits)?;
        Ok(MsrInterception {
            vm,
            exits,
            filter: FilterState::Unknown,
            shut_down: false,
        })
    }

    /// The VM.
    pub fn vm(&self) -> &VmFd {
        self.vm.borrow()
    }

    /// The exit reasons enabled now.
    pub fn exit_reasons(&self) -> MsrExitReason {
        self.exits
    }

    /// Whether this owner installed a filter that filters (as opposed to none, or one that
    /// removes filtering).
    pub fn filter_installed(&self) -> bool {
        self.filter == FilterState::Installed
    }

    /// Changes the exit reasons; refuses to drop FILTER unless this owner knows no filter is
    /// installed (it removed it, or installed one that removes filtering). Until then a filter
    /// installed by other means is assumed: call [`remove_filter`](Self::remove_filter) first.
    ///
    /// Filters installed by calling the VM fd directly ([`vm`](Self::vm)) bypass this owner and
    /// its checks.
    pub fn set_exit_reasons(&mut self, reasons: MsrExitReason) -> Result<(), KvmError> {
        if self.filter != FilterState::None && !reasons.contains(MsrExitReason::Filter) {
            return Err(KvmError::FilterExitRequired { asked: reasons });
        }
        enable_exits(self.vm.borrow(), reasons)?;
        self.exits = reasons;
        Ok(())
    }

    /// Installs (or atomically replaces) the VM's filter, first re-enabling the FILTER exit if it
    /// was dropped while no filter was installed. When the call returns, every later guest access
    /// is judged by it. Returns the filter's lints: what the kernel accepts but
    /// ignores (see [`Filter::lints`]); a packed filter has none.
    ///
    /// Installing [`Filter::unfiltered`] removes filtering.
    pub fn install(&mut self, filter: &Filter) -> Result<Lints, KvmError> {
        if !filter.is_unfiltered() && !self.exits.contains(MsrExitReason::Filter) {
            // FILTER was dropped while no filter was installed: enable it again first, or the
            // kernel would turn denied accesses into #GP.
            let exits = self.exits | MsrExitReason::Filter;
            enable_exits(self.vm.borrow(), exits)?;
            self.exits = exits;
        }
        let raw = KvmFilter::new(filter);
        // SAFETY: every non-empty range's bitmap pointer points into `filter`, borrowed for the
        // call, with ceil(nmsrs / 64) * 8 readable bytes; a `Filter` passes the kernel's checks.
        unsafe { self.vm.borrow().set_msr_filter_unchecked(raw.as_raw()) }.map_err(|err| {
            KvmError::Ioctl {
                what: "KVM_X86_SET_MSR_FILTER",
                err,
            }
        })?;
        self.filter = if filter.is_unfiltered() {
            FilterState::None
        } else {
            FilterState::Installed
        };
        Ok(filter.lints())
    }

    /// Removes the filter: every MSR is allowed again.
    pub fn remove_filter(&mut self) -> Result<(), KvmError> {
        self.install(&Filter::unfiltered()).map(|_| ())
    }

    /// Tears down in the safe order: the filter first, then the exits.
    pub fn shutdown(mut self) -> Result<(), KvmError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), KvmError> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        self.remove_filter()?;
        enable_exits(self.vm.borrow(), MsrExitReason::empty())?;
        self.exits = MsrExitReason::empty();
        Ok(())
    }
}

impl<V: Borrow<VmFd>> Drop for MsrInterception<V> {
    /// Best-effort [`shutdown`](MsrInterception::shutdown); errors are ignored (the VM may be
    /// going away anyway).
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}
