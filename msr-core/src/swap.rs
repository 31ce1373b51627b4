//! The live-replacement protocol: a generation clock and per-vCPU epochs, a grace period in
//! the manner of quiescent-state-based RCU, so that a VMM can replace its handler table and its
//! kernel filter while vCPU threads run, and free a retired table only once no vCPU can still
//! need it.
//!
//! # Why
//! `KVM_X86_SET_MSR_FILTER` replaces the filter under SRCU: when the ioctl returns, no decision
//! still uses the old filter, but an exit the old filter produced may still be on its way out of
//! `KVM_RUN` on a vCPU thread. A `KVM_RUN` entered after the ioctl returned sees only the new
//! filter. So a vCPU that last entered `KVM_RUN` when generation `e` was installed can hold
//! exits of generation `e` or any later one, never of an earlier one.
//!
//! # The protocol
//! Tables carry increasing generation numbers. The host keeps the published tables newest first
//! (in msr-filter-kvm: `live::Generational`).
//!
//! Updater (replacements are serialised among themselves, e.g. by a mutex):
//! 1. Build the new table, generation `g` (greater than every earlier one); if its filter needs
//!    more exit reasons, enable them first (the ordering rule).
//! 2. **Publish** it before the ioctl: from now on an exit of the new filter finds its handler.
//! 3. Issue `KVM_X86_SET_MSR_FILTER`.
//!    - Success: [`Generations::advance`] to `g`. Every `KVM_RUN` entered from now on sees only
//!      filter `g`.
//!    - Failure: the kernel kept the old filter. Withdraw the table (unpublish it), then
//!      [`Generations::advance`] to `g` all the same, which only starts a grace period: tables
//!      are found by the newest generation not above a vCPU's epoch, so the old table still
//!      decides, fully in force.
//! 4. **Reclaim** (now or at any later time, never waiting): every table older than
//!    [`Generations::oldest_in_use`] (and every withdrawn table of a generation not above it)
//!    can no longer be reached by any vCPU and may be freed.
//!
//! vCPU (no lock, no allocation; two atomic loads and one store per `KVM_RUN`):
//! 1. Before each `KVM_RUN`: [`Generations::enter`], the quiescent point; it records the
//!    installed generation `e` as the vCPU's epoch (and re-reads the clock so that an updater
//!    that advanced concurrently either sees the epoch or is seen).
//! 2. On an MSR exit: look for a handler in the published tables from the newest down to the
//!    first of generation `<= e`, the one installed when the vCPU entered. The newest table
//!    that has a handler for the MSR serves the exit: the new policy's where both have one, the
//!    old one's for an exit the old filter produced.
//! 3. A vCPU that leaves the run loop (paused, stopped) calls [`Generations::leave`]: it holds
//!    no exit and no table, and no longer delays reclamation.
//!
//! A vCPU halted inside `KVM_RUN` keeps its epoch: it delays reclamation (kick it out of
//! `KVM_RUN` to let it pass a quiescent point), never a replacement.
//!
//! # Checked by loom
//! The atomics come from [`sync`](crate::sync): built with `RUSTFLAGS="--cfg loom"`, loom's
//! types replace them and the model test `msr-kvm/tests/loom_swap.rs` explores the
//! interleavings of two vCPUs and an updater over this code, with the kernel modelled as an
//! SRCU-replaced filter.

use crate::sync::{fence, AtomicU64, Ordering::SeqCst};

/// The epoch of a vCPU outside `KVM_RUN` with no exit in hand.
pub const OFFLINE: u64 = u64::MAX;

/// One vCPU's epoch: the generation installed when it last entered `KVM_RUN`, or [`OFFLINE`].
/// Aligned to a cache line of its own so vCPUs do not slow each other down.
#[derive(Debug)]
#[repr(align(64))]
pub struct VcpuEpoch {
    epoch: AtomicU64,
}

impl VcpuEpoch {
    /// A vCPU not yet running: [`OFFLINE`].
    #[cfg(not(loom))]
    pub const fn new() -> VcpuEpoch {
        VcpuEpoch {
            epoch: AtomicU64::new(OFFLINE),
        }
    }

    /// A vCPU not yet running: [`OFFLINE`].
    #[cfg(loom)]
    pub fn new() -> VcpuEpoch {
        VcpuEpoch {
            epoch: AtomicU64::new(OFFLINE),
        }
    }

    /// The epoch: a generation, or [`OFFLINE`].
    pub fn get(&self) -> u64 {
        self.epoch.load(SeqCst)
    }
}

impl Default for VcpuEpoch {
    fn default() -> VcpuEpoch {
        VcpuEpoch::new()
    }
}

/// The generation clock: the generation of the last table whose installation (or failed
/// installation) has completed. See the [module docs](self) for the protocol.
#[derive(Debug)]
pub struct Generations {
    installed: AtomicU64,
}

impl Generations {
    /// A clock at generation `first` (the table installed first).
    pub fn new(first: u64) -> Generations {
        Generations {
            installed: AtomicU64::new(first),
        }
    }

    /// The generation installed last.
    pub fn installed(&self) -> u64 {
        self.installed.load(SeqCst)
    }

    /// vCPU step 1, the quiescent point right before `KVM_RUN`: records the installed
    /// generation as `vcpu`'s epoch and returns it.
    ///
    /// The store is checked against a second read of the clock: if an updater advanced it in
    /// between, the vCPU takes the newer generation. Both sides store, then issue a
    /// sequentially consistent fence, then load (the vCPU its epoch then the clock, the updater
    /// the clock then the epochs), so an updater that advances either sees this epoch or has its
    /// advance seen here: it never frees a table this vCPU may use.
    pub fn enter(&self, vcpu: &VcpuEpoch) -> u64 {
        let mut g = self.installed.load(SeqCst);
        loop {
            vcpu.epoch.store(g, SeqCst);
            fence(SeqCst);
            let now = self.installed.load(SeqCst);
            if now == g {
                return g;
            }
            g = now;
        }
    }

    /// The epoch `vcpu` dispatches with: its own, or, for a vCPU that did not call
    /// [`enter`](Self::enter), a fresh one ([`enter`](Self::enter) now; slower, but safe).
    pub fn epoch_for_dispatch(&self, vcpu: &VcpuEpoch) -> u64 {
        match vcpu.epoch.load(SeqCst) {
            OFFLINE => self.enter(vcpu),
            e => e,
        }
    }

    /// vCPU step 3: `vcpu` is outside `KVM_RUN` with no exit in hand and no table.
    pub fn leave(&self, vcpu: &VcpuEpoch) {
        vcpu.epoch.store(OFFLINE, SeqCst);
    }

    /// Updater step 3: the ioctl for generation `g` returned (or failed). `g` must be greater
    /// than the installed generation.
    pub fn advance(&self, g: u64) {
        debug_assert!(g > self.installed.load(SeqCst));
        self.installed.store(g, SeqCst);
        // Pairs with the fence in `enter`: epochs read after this see every vCPU that read the
        // old generation (see `enter`).
        fence(SeqCst);
    }

    /// Updater step 4: the oldest generation a vCPU may still use; tables of older generations
    /// can be freed. The installed generation when every vCPU is [`OFFLINE`].
    pub fn oldest_in_use(&self, vcpus: &[VcpuEpoch]) -> u64 {
        let mut oldest = self.installed.load(SeqCst);
        for vcpu in vcpus {
            oldest = oldest.min(vcpu.epoch.load(SeqCst));
        }
        oldest
    }

    /// The vCPUs (by position in `vcpus`) whose epoch is older than generation `g`: those that
    /// have not passed a quiescent point since `g` was installed, and so delay the reclamation
    /// of tables older than `g`. Kick them out of `KVM_RUN` to let them pass one.
    pub fn lagging<'a>(&self, vcpus: &'a [VcpuEpoch], g: u64) -> impl Iterator<Item = usize> + 'a {
        (0..vcpus.len()).filter(move |&v| vcpus[v].epoch.load(SeqCst) < g)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_vcpu_takes_the_installed_generation_and_holds_back_reclamation() {
        let gens = Generations::new(1);
        let vcpus = [VcpuEpoch::new(), VcpuEpoch::new()];
        assert_eq!(
            gens.oldest_in_use(&vcpus),
            1,
            "all offline: the installed one"
        );
        assert_eq!(gens.enter(&vcpus[0]), 1);
        gens.advance(2);
        gens.advance(3);
        assert_eq!(
            gens.oldest_in_use(&vcpus),
            1,
            "vCPU 0 may hold an exit of 1"
        );
        assert_eq!(gens.lagging(&vcpus, 3).collect::<std::vec::Vec<_>>(), [0]);
        assert_eq!(gens.enter(&vcpus[1]), 3);
        assert_eq!(gens.epoch_for_dispatch(&vcpus[1]), 3);
        assert_eq!(gens.enter(&vcpus[0]), 3);
        assert_eq!(gens.oldest_in_use(&vcpus), 3);
        gens.leave(&vcpus[0]);
        gens.leave(&vcpus[1]);
        gens.advance(4);
        assert_eq!(gens.oldest_in_use(&vcpus), 4);
        assert_eq!(gens.lagging(&vcpus, 4).count(), 0);
    }

    #[test]
    fn an_offline_vcpu_enters_when_it_dispatches() {
        let gens = Generations::new(7);
        let vcpu = VcpuEpoch::new();
        assert_eq!(vcpu.get(), OFFLINE);
        assert_eq!(gens.epoch_for_dispatch(&vcpu), 7);
        assert_eq!(vcpu.get(), 7);
    }
}
