//! # msr-filter-kvm
//!
//! The Linux KVM host for [`msr_filter_core`]: a thin layer over `kvm-ioctls` that
//!
//! - owns a VM's MSR interception ([`MsrInterception`]): it enables user-space MSR exits
//!   *before* any filter is installed, refuses to drop the FILTER exit while a filter is
//!   installed, and removes the filter before the exits on teardown, so the kernel never turns a
//!   denied access into a #GP behind your back;
//! - installs [`msr_filter_core::Filter`]s with bitmaps sized as the kernel reads them, and converts to
//!   and from kvm-ioctls' and kvm-bindings' filter types ([`convert`]);
//! - dispatches MSR exits to handlers ([`Dispatcher`]), failing closed: an exit nobody handles
//!   becomes #GP in the guest;
//! - ships a tiny real-mode [`guest`] harness used by the tests, the examples and `msrfilter`.
//!
//! ```no_run
//! use kvm_ioctls::{Kvm, MsrExitReason};
//! use msr_filter_core::Policy;
//! use msr_filter_kvm::{handlers, Dispatcher, MsrInterception};
//!
//! let kvm = Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! let policy = Policy::<16>::parse("default allow\n")?;
//! let dispatcher = Dispatcher::builder(&policy)
//!     .handle(0x35, msr_filter_core::Access::READ, handlers::Constant::new(0x0001_0001))?
//!     .build()?;
//! let mut msrs = MsrInterception::new(&kvm, &vm, MsrExitReason::empty())?;
//! let lints = msrs.install(dispatcher.filter())?;
//! assert!(lints.is_empty());
//! // In the vCPU loop: `dispatcher.dispatch(vcpu_id, &mut exit)`.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod convert;
mod dispatch;
pub mod guest;
pub mod handlers;
mod intercept;
pub mod kick;
pub mod learn;
pub mod live;
mod lookup;
mod msr_lists;
mod sync;

pub use dispatch::{
    reason_name, BuildError, Dispatch, Dispatcher, DispatcherBuilder, ExitRoute, Fault,
    HandlerStats, MsrContext, MsrHandler, MsrSpan, RouteMsrStats, RouteStats, DEFAULT_VCPUS,
};
pub use intercept::{KvmError, MsrInterception};
pub use live::{LiveDispatcher, Replaced};
pub use msr_lists::KvmMsrLists;

use msr_filter_core::{scratch_len, PackError, Packed, PolicyView};

/// Packs a policy of any number of rules in time O(n log n), with the working memory
/// ([`PolicyView::pack_with`]'s scratch) on the heap: what a std host calls instead of
/// [`PolicyView::pack`], whose stack scratch holds 256 rules.
pub fn pack(policy: PolicyView<'_>) -> Result<Packed, PackError> {
    let mut scratch = vec![0; scratch_len(policy.rules().len())];
    policy.pack_with(&mut scratch)
}
