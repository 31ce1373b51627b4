//! Live replacement: change the policy, the handlers and the kernel filter while vCPU threads
//! run, with no lost, mis-routed or spurious-#GP exit.
//!
//! [`LiveDispatcher`] is what a VMM uses: it owns the VM's [`MsrInterception`] and a
//! [`Generational`] list of [`Dispatcher`]s. The protocol (generations, per-vCPU epochs, a grace
//! period before a retired table is freed) is [`msr_filter_core::swap`]'s; the list here is the
//! part that needs raw pointers, checked together with it by loom (`tests/loom_swap.rs`).
//!
//! ```text
//!  updater (one at a time)                     vCPU thread v (no lock, no allocation)
//!  ─────────────────────────────────────       ──────────────────────────────────────────
//!  1 build table g; enable exit reasons        a  enter_run(v): epoch[v] = installed
//!  2 publish g (head = g, g.older = g-1)          KVM_RUN ... MSR exit (decided by a filter
//!  3 KVM_X86_SET_MSR_FILTER(filter g)                          of generation >= epoch[v])
//!      ok:   installed = g                     b  dispatch: tables from head down to the
//!      fail: withdraw g, head = g-1,              first with generation <= epoch[v]; the
//!            installed = g (grace clock)          newest with a handler for the MSR serves
//!  4 free tables older than min(epoch[*])      c  back to a (or leave_run(v) when pausing)
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use kvm_ioctls::{MsrExitReason, VcpuExit, VmFd};
use msr_filter_core::swap::{Generations, VcpuEpoch};
use msr_filter_core::AccessType;

use crate::dispatch::{on_msr_exit, Dispatch, Dispatcher};
use crate::intercept::{KvmError, MsrInterception};
use crate::sync::{AtomicBool, AtomicPtr, Mutex, MutexGuard};

/// A table of handlers a [`Generational`] list holds: it says which MSR accesses it handles.
pub trait HandlerTable: Send + Sync {
    /// Whether a handler of this table takes `access` to `index`.
    fn handles(&self, index: u32, access: AccessType) -> bool;
}

impl HandlerTable for Dispatcher {
    fn handles(&self, index: u32, access: AccessType) -> bool {
        self.has_handler(index, access)
    }
}

/// Deliberately broken variants of the protocol, for the loom model to show it can fail.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The protocol as it is.
    No,
    /// Publish the new table only after the ioctl returned.
    PublishAfterInstall,
    /// Free retired tables as soon as the ioctl returned, without the grace period.
    ReclaimWithoutGrace,
}

struct Node<T> {
    generation: u64,
    table: T,
    /// The next older table; null for the oldest.
    older: AtomicPtr<Node<T>>,
    /// Set when the ioctl installing this table failed.
    withdrawn: AtomicBool,
    /// Under loom, reclaimed nodes are marked, not freed, so a protocol bug shows as a failed
    /// assertion rather than undefined behaviour.
    #[cfg(loom)]
    reclaimed: AtomicBool,
}

impl<T> Node<T> {
    fn boxed(generation: u64, table: T, older: *mut Node<T>) -> *mut Node<T> {
        Box::into_raw(Box::new(Node {
            generation,
            table,
            older: AtomicPtr::new(older),
            withdrawn: AtomicBool::new(false),
            #[cfg(loom)]
            reclaimed: AtomicBool::new(false),
        }))
    }
}

/// What only the updater touches, under the mutex.
struct Updater<T> {
    next_generation: u64,
    /// Tables whose installation failed, until no vCPU can hold them.
    withdrawn: Vec<*mut Node<T>>,
    #[cfg(loom)]
    graveyard: Vec<*mut Node<T>>,
    #[cfg(loom)]
    broken: Broken,
}

/// Published handler tables, newest first, with the generation clock and per-vCPU epochs of
/// [`msr_filter_core::swap`]: vCPUs look tables up without a lock; the updater replaces the
/// newest one and frees retired ones once no vCPU can reach them.
///
/// The building block of [`LiveDispatcher`], generic over the table so that the loom model
/// runs this very code with small tables.
pub struct Generational<T: HandlerTable> {
    head: AtomicPtr<Node<T>>,
    generations: Generations,
    vcpus: Box<[VcpuEpoch]>,
    updater: Mutex<Updater<T>>,
}

// SAFETY: the raw node pointers are owned by the list: nodes are created by the updater, read
// by vCPU threads only through shared references (`T: Sync`) while the protocol keeps them
// alive, and freed by the updater under the mutex; `T: Send` lets the freeing thread drop them.
unsafe impl<T: HandlerTable> Send for Generational<T> {}
// SAFETY: as above; every field shared between threads is an atomic or behind the mutex.
unsafe impl<T: HandlerTable> Sync for Generational<T> {}

impl<T: HandlerTable> fmt::Debug for Generational<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generational")
            .field("installed", &self.generations.installed())
            .field("vcpus", &self.vcpus.len())
            .finish()
    }
}

impl<T: HandlerTable> Generational<T> {
    /// A list holding `first`, generation 1, installed, for vCPUs `0..vcpus`.
    pub fn new(vcpus: usize, first: T) -> Generational<T> {
        Generational {
            head: AtomicPtr::new(Node::boxed(1, first, ptr::null_mut())),
            generations: Generations::new(1),
            vcpus: (0..vcpus).map(|_| VcpuEpoch::new()).collect(),
            updater: Mutex::new(Updater {
                next_generation: 2,
                withdrawn: Vec::new(),
                #[cfg(loom)]
                graveyard: Vec::new(),
                #[cfg(loom)]
                broken: Broken::No,
            }),
        }
    }

    /// Selects a deliberately broken variant of the protocol (loom model tests only).
    #[cfg(loom)]
    pub fn set_broken(&self, broken: Broken) {
        self.lock().broken = broken;
    }

    /// How many vCPUs the list serves.
    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    /// The generation installed last.
    pub fn installed(&self) -> u64 {
        self.generations.installed()
    }

    /// vCPU step: the quiescent point right before `KVM_RUN`. Returns the vCPU's epoch, `None`
    /// for a vCPU index out of range.
    #[inline]
    pub fn enter(&self, vcpu: usize) -> Option<u64> {
        Some(self.generations.enter(self.vcpus.get(vcpu)?))
    }

    /// vCPU step: the vCPU leaves the run loop (paused, stopped) holding no exit.
    pub fn leave(&self, vcpu: usize) {
        if let Some(epoch) = self.vcpus.get(vcpu) {
            self.generations.leave(epoch);
        }
    }

    /// vCPU step: calls `f` with the table that serves an exit of `vcpu` for `access` to
    /// `index`, and its generation: the newest table with a handler for it among those the
    /// vCPU's exit may come from; else the newest installed table (whose routes then apply, and
    /// count the exit).
    /// `None` only for a vCPU index out of range.
    #[inline]
    pub fn with_table<R>(
        &self,
        vcpu: usize,
        index: u32,
        access: AccessType,
        f: impl FnOnce(&T, u64) -> R,
    ) -> Option<R> {
        let epoch = self.generations.epoch_for_dispatch(self.vcpus.get(vcpu)?);
        let mut fallback: Option<&Node<T>> = None;
        let mut at = self.head.load(Acquire);
        while !at.is_null() {
            // SAFETY: `at` was published (head, or the `older` link of a node we hold) and is
            // freed only once every vCPU's epoch is past it (protocol step 4). This vCPU's epoch
            // is published and not older than any node we visit: we stop at the first node of a
            // generation <= epoch, whose own `older` link we never follow.
            let node = unsafe { &*at };
            #[cfg(loom)]
            assert!(
                !node.reclaimed.load(Acquire),
                "a vCPU reached a reclaimed table (generation {})",
                node.generation
            );
            let last = node.generation <= epoch;
            if !node.withdrawn.load(Acquire) {
                // The only table considered serves with a handler or its routes, with no
                // separate search (the common case: one table, one search).
                if (last && fallback.is_none()) || node.table.handles(index, access) {
                    return Some(f(&node.table, node.generation));
                }
                fallback.get_or_insert(node);
            }
            if last {
                break;
            }
            at = node.older.load(Acquire);
        }
        fallback.map(|node| f(&node.table, node.generation))
    }

    fn lock(&self) -> MutexGuard<'_, Updater<T>> {
        // A panic while holding the lock leaves the list consistent (every step is a single
        // store), so a poisoned lock is used as it is.
        self.updater.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updater: replaces the newest table with `table`, calling `install` (the ioctl) between
    /// publishing it and advancing the clock. On error the table is withdrawn and the previous
    /// one stays in force. Returns the new generation. Never waits for vCPUs.
    pub fn replace<E>(
        &self,
        table: T,
        install: impl FnOnce(&T) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut updater = self.lock();
        let generation = updater.next_generation;
        updater.next_generation += 1;
        let old = self.head.load(Relaxed);
        let node = Node::boxed(generation, table, old);
        #[cfg(loom)]
        let publish_first = updater.broken != Broken::PublishAfterInstall;
        #[cfg(not(loom))]
        let publish_first = true;
        if publish_first {
            // Step 2: before the ioctl, so an exit of the new filter finds its handler.
            self.head.store(node, Release);
        }
        // SAFETY: `node` is live: it is freed only by this updater, under the lock we hold.
        let result = install(unsafe { &(*node).table });
        match result {
            Ok(()) => {
                if !publish_first {
                    self.head.store(node, Release);
                }
                self.generations.advance(generation);
            }
            Err(e) => {
                // SAFETY: as above.
                unsafe { &*node }.withdrawn.store(true, Release);
                self.head.store(old, Release);
                // A grace period for vCPUs that saw the withdrawn table.
                self.generations.advance(generation);
                updater.withdrawn.push(node);
                self.reclaim_locked(&mut updater);
                return Err(e);
            }
        }
        self.reclaim_locked(&mut updater);
        Ok(generation)
    }

    /// Updater: frees every retired table no vCPU can reach any more; returns how many retired
    /// tables remain (held back by vCPUs that have not passed a quiescent point since: see
    /// [`lagging`](Self::lagging)).
    pub fn reclaim(&self) -> usize {
        let mut updater = self.lock();
        self.reclaim_locked(&mut updater)
    }

    fn reclaim_locked(&self, updater: &mut Updater<T>) -> usize {
        #[cfg(loom)]
        let oldest = if updater.broken == Broken::ReclaimWithoutGrace {
            self.generations.installed()
        } else {
            self.generations.oldest_in_use(&self.vcpus)
        };
        #[cfg(not(loom))]
        let oldest = self.generations.oldest_in_use(&self.vcpus);
        let mut remaining: usize = 0;
        let mut at = self.head.load(Relaxed);
        while !at.is_null() {
            // SAFETY: the updater (we hold the lock) is the only one that frees nodes.
            let node = unsafe { &*at };
            if node.generation <= oldest {
                // Every vCPU stops at this node or before it: the older ones are unreachable.
                let cut = node.older.swap(ptr::null_mut(), AcqRel);
                Self::free_chain(updater, cut);
                break;
            }
            remaining += 1;
            at = node.older.load(Relaxed);
        }
        let (gone, kept): (Vec<_>, Vec<_>) = updater.withdrawn.iter().partition(|&&w| {
            // SAFETY: withdrawn nodes stay allocated until freed here, under the lock. One of a
            // generation <= oldest is held by no vCPU: every one entered after the withdrawal.
            unsafe { &*w }.generation <= oldest
        });
        updater.withdrawn = kept;
        for node in gone {
            Self::free(updater, node);
        }
        // Counted: the nodes newer than `oldest`, the installed head among them when it is; the
        // node kept at `oldest` is then retired too, and the head is not: the count is right.
        remaining + updater.withdrawn.len()
    }

    fn free_chain(updater: &mut Updater<T>, mut at: *mut Node<T>) {
        while !at.is_null() {
            // SAFETY: the chain from `at` was unlinked from the last reachable node; no vCPU can
            // reach it, and only the updater frees.
            let older = unsafe { &*at }.older.load(Relaxed);
            Self::free(updater, at);
            at = older;
        }
    }

    /// Frees an unreachable node (under loom: marks it and keeps it until the list drops).
    fn free(updater: &mut Updater<T>, node: *mut Node<T>) {
        #[cfg(loom)]
        {
            // SAFETY: still allocated: loom builds free nodes only when the list drops.
            unsafe { &*node }.reclaimed.store(true, Release);
            updater.graveyard.push(node);
        }
        #[cfg(not(loom))]
        {
            let _ = updater;
            // SAFETY: `node` came from `Box::into_raw` and is unreachable (callers' contract).
            drop(unsafe { Box::from_raw(node) });
        }
    }

    /// The vCPUs that delay reclamation: not passed a quiescent point since the installed
    /// generation, and not left. Kick them out of `KVM_RUN` (see [`LiveDispatcher`]).
    pub fn lagging(&self) -> Vec<usize> {
        let installed = self.generations.installed();
        self.generations.lagging(&self.vcpus, installed).collect()
    }

    /// Calls `f` with the installed table (not on the vCPU path: it takes the updater's lock).
    pub fn with_installed<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let _updater = self.lock();
        // SAFETY: the head is freed only by the updater, whose lock we hold; outside `replace`
        // the head is the installed table.
        f(&unsafe { &*self.head.load(Acquire) }.table)
    }
}

impl<T: HandlerTable> Drop for Generational<T> {
    fn drop(&mut self) {
        let updater = self.updater.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<*mut Node<T>> = std::mem::take(&mut updater.withdrawn);
        #[cfg(loom)]
        nodes.append(&mut updater.graveyard);
        let mut at = self.head.load(Relaxed);
        while !at.is_null() {
            nodes.push(at);
            // SAFETY: we own the list exclusively (`&mut self`); every node is still allocated.
            at = unsafe { &*at }.older.load(Relaxed);
        }
        for node in nodes {
            // SAFETY: each node came from `Box::into_raw` and appears once in `nodes`.
            drop(unsafe { Box::from_raw(node) });
        }
    }
}

/// A [`Dispatcher`] that can be replaced while vCPU threads run; owns the VM's
/// [`MsrInterception`] so that every replacement installs its filter with the ordering rule.
///
/// Every FILTER exit is served by the handler that the old or the new table gives its MSR (the
/// new one where both have one); no exit is lost to a replacement, and a failed ioctl leaves
/// the old table and filter fully in force. Handlers shared by old and new tables (the same
/// `Arc`) keep their state.
///
/// The vCPU loop calls [`enter_run`](Self::enter_run) right before every `KVM_RUN` and
/// [`dispatch`](Self::dispatch) on every exit; a vCPU thread that stops running calls
/// [`leave_run`](Self::leave_run). A vCPU halted inside `KVM_RUN` delays the freeing of retired
/// tables, never a replacement: [`lagging_vcpus`](Self::lagging_vcpus) names them, and
/// [`kick::VcpuKicker`](crate::kick::VcpuKicker) interrupts their `KVM_RUN` (`EINTR`) so that
/// they pass the quiescent point.
///
/// ```no_run
/// use std::sync::Arc;
/// use kvm_ioctls::{Kvm, MsrExitReason};
/// use msr_filter_core::{Access, Action, Policy};
/// use msr_filter_kvm::{handlers::Constant, Dispatcher, LiveDispatcher, MsrInterception};
///
/// let kvm = Kvm::new()?;
/// let vm = Arc::new(kvm.create_vm()?);
/// let msrs = MsrInterception::new(&kvm, Arc::clone(&vm), MsrExitReason::empty())?;
/// let first = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
///     .handle(0x35, Access::READ, Constant::new(1))?
///     .build()?;
/// let live = Arc::new(LiveDispatcher::new(msrs, 2, first)?);
/// // vCPU thread v: loop { live.enter_run(v); let exit = vcpu.run()?; live.dispatch(v, &mut exit); }
/// let next = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
///     .handle(0x35, Access::READ, Constant::new(2))?
///     .build()?;
/// live.replace(next)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LiveDispatcher<V: Borrow<VmFd>> {
    tables: Generational<Dispatcher>,
    msrs: std::sync::Mutex<MsrInterception<V>>,
}

impl<V: Borrow<VmFd>> fmt::Debug for LiveDispatcher<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveDispatcher")
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

/// What a replacement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The new table's generation.
    pub generation: u64,
    /// Retired tables still allocated: vCPUs that have not passed a quiescent point since may
    /// hold exits they serve. Freed by a later [`LiveDispatcher::reclaim`] or replacement.
    pub retired: usize,
}

impl<V: Borrow<VmFd>> LiveDispatcher<V> {
    /// Installs `first`'s filter through `msrs` (enabling the exit reasons it needs first) and
    /// serves vCPUs `0..vcpus`.
    pub fn new(
        mut msrs: MsrInterception<V>,
        vcpus: usize,
        first: Dispatcher,
    ) -> Result<LiveDispatcher<V>, KvmError> {
        install(&mut msrs, &first)?;
        Ok(LiveDispatcher {
            tables: Generational::new(vcpus, first),
            msrs: std::sync::Mutex::new(msrs),
        })
    }

    /// Right before each `KVM_RUN` of vCPU `vcpu`: the quiescent point. Two atomic loads and a
    /// store; no lock.
    #[inline]
    pub fn enter_run(&self, vcpu: usize) {
        let _ = self.tables.enter(vcpu);
    }

    /// vCPU `vcpu` stops running (paused, shut down) and holds no exit: it no longer delays
    /// the freeing of retired tables.
    pub fn leave_run(&self, vcpu: usize) {
        self.tables.leave(vcpu);
    }

    /// Handles an exit as [`Dispatcher::dispatch`] does, with the table that serves it.
    #[inline]
    pub fn dispatch(&self, vcpu: usize, exit: &mut VcpuExit<'_>) -> Dispatch {
        on_msr_exit(exit, |access, reason, index, data, error| {
            self.dispatch_msr(vcpu, access, reason, index, data, error)
        })
    }

    /// Handles an exit given in its parts, as [`Dispatcher::dispatch_msr`] does, with the
    /// table that serves it. A vCPU index out of range gets #GP.
    #[inline]
    pub fn dispatch_msr(
        &self,
        vcpu: usize,
        access: AccessType,
        reason: MsrExitReason,
        index: u32,
        data: &mut u64,
        error: &mut u8,
    ) -> Dispatch {
        *error = 1;
        self.tables
            .with_table(vcpu, index, access, |d, _| {
                d.dispatch_msr(vcpu, access, reason, index, data, error)
            })
            .unwrap_or(Dispatch::Msr {
                index,
                write: access == AccessType::Write,
                fault: true,
            })
    }

    /// Replaces the dispatcher and the kernel filter while vCPUs run: enables any exit reason
    /// `next` needs, publishes `next`, installs its filter (`KVM_X86_SET_MSR_FILTER`), then frees
    /// what no vCPU can still reach. Replacements are serialised; this never waits for vCPUs. On
    /// error the old dispatcher and filter stay fully in force.
    ///
    /// Replacing with a dispatcher whose filter is [unfiltered](msr_filter_core::Filter::unfiltered)
    /// removes filtering; FILTER exits stay enabled (exits of the old filter may be in flight).
    pub fn replace(&self, next: Dispatcher) -> Result<Replaced, KvmError> {
        let mut msrs = self.msrs.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.tables.replace(next, |d| install(&mut msrs, d))?;
        Ok(Replaced {
            generation,
            retired: self.tables.reclaim(),
        })
    }

    /// Frees the retired tables no vCPU can reach any more; returns how many remain.
    pub fn reclaim(&self) -> usize {
        self.tables.reclaim()
    }

    /// The vCPUs holding back the freeing of retired tables: inside `KVM_RUN` (or holding an
    /// exit) since before the last replacement. Kick them out of `KVM_RUN`.
    pub fn lagging_vcpus(&self) -> Vec<usize> {
        self.tables.lagging()
    }

    /// The installed generation (1 for the first dispatcher, counting failed replacements).
    pub fn generation(&self) -> u64 {
        self.tables.installed()
    }

    /// Calls `f` with the installed dispatcher, e.g. for its statistics (takes a lock; not for
    /// the vCPU path).
    pub fn with_current<R>(&self, f: impl FnOnce(&Dispatcher) -> R) -> R {
        self.tables.with_installed(f)
    }

    /// Gives the interception back, for teardown; the dispatchers are dropped.
    pub fn into_interception(self) -> MsrInterception<V> {
        self.msrs.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Enables the exit reasons `d` needs (before the filter: the ordering rule), then installs its
/// filter.
fn install<V: Borrow<VmFd>>(msrs: &mut MsrInterception<V>, d: &Dispatcher) -> Result<(), KvmError> {
    let needed = msrs.exit_reasons() | d.exit_reasons();
    if needed != msrs.exit_reasons() {
        msrs.set_exit_reasons(needed)?;
    }
    msrs.install(d.filter()).map(|_lints| ())
}
