//! Model check of the live-replacement protocol with loom: two vCPU threads and one updater
//! over the product's own code (`msr_filter_core::swap` and `msr_filter_kvm::live::Generational`,
//! whose atomics and mutex become loom's under `--cfg loom`), with the kernel modelled as an
//! SRCU-replaced filter: a replacement returns once in-flight decisions are finished, but an exit
//! a decision produced may still be on its way to user space.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p msr-filter-kvm --release --test loom_swap`
//! (`scripts/test-all.sh` does, in a target directory of its own).
//!
//! Invariants, asserted inside the model on every exit:
//! - the exit finds a handler (no exit lost, no #GP caused by the replacement);
//! - the handler's table is not older than the filter that produced the exit (never a handler
//!   of a policy that no longer applied), and the new table's where both have one;
//! - the table was not reclaimed (no use after free).
//!
//! Broken variants (publishing after the ioctl, reclaiming without the grace period) must fail.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use msr_filter_core::AccessType;
use msr_filter_kvm::live::{Broken, Generational, HandlerTable};

/// A handler table: bit `i` set = a handler for MSR `i`. Its filter denies exactly those MSRs
/// (registering a handler intercepts the MSR).
struct Table(u32);

impl HandlerTable for Table {
    fn handles(&self, index: u32, _: AccessType) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// The MSRs each generation's table handles: generation 1 takes MSR 0 and MSR 2, generation 2
/// takes MSR 1 and MSR 2 (both have MSR 2: the new one must serve it once it is installed).
fn handled(generation: u64) -> u32 {
    match generation {
        1 => 0b101,
        2 => 0b110,
        _ => 0,
    }
}

/// The kernel: the installed filter's generation, and per vCPU whether a decision (an SRCU
/// read-side section) is in progress.
struct Kernel {
    filter: AtomicU64,
    deciding: [AtomicBool; 2],
}

impl Kernel {
    /// `kvm_msr_allowed()` under SRCU: which filter decides this access.
    fn decide(&self, vcpu: usize) -> u64 {
        self.deciding[vcpu].store(true, SeqCst);
        let filter = self.filter.load(SeqCst);
        self.deciding[vcpu].store(false, SeqCst);
        filter
    }

    /// `KVM_X86_SET_MSR_FILTER`: replace the pointer, then `synchronize_srcu`.
    fn set_filter(&self, generation: u64) {
        self.filter.store(generation, SeqCst);
        for deciding in &self.deciding {
            while deciding.load(SeqCst) {
                thread::yield_now();
            }
        }
    }
}

/// vCPU `vcpu` enters `KVM_RUN`, accesses `msr` once; a denied access exits and is dispatched.
fn vcpu_run(list: &Generational<Table>, kernel: &Kernel, vcpu: usize, msr: u32) {
    list.enter(vcpu).unwrap();
    let filter = kernel.decide(vcpu);
    if handled(filter) & (1 << msr) == 0 {
        return; // allowed: handled in the kernel, no exit
    }
    let (found, generation) = list
        .with_table(vcpu, msr, AccessType::Read, |t, g| {
            (t.handles(msr, AccessType::Read), g)
        })
        .unwrap();
    assert!(
        found,
        "vCPU {vcpu}: an exit of filter {filter} for MSR {msr} found no handler"
    );
    assert!(
        generation >= filter,
        "vCPU {vcpu}: an exit of filter {filter} for MSR {msr} served by table {generation}"
    );
}

fn model(broken: Broken, vcpu_msrs: [u32; 2]) {
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&executions);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let list = Arc::new(Generational::new(2, Table(handled(1))));
        list.set_broken(broken);
        let kernel = Arc::new(Kernel {
            filter: AtomicU64::new(1),
            deciding: [AtomicBool::new(false), AtomicBool::new(false)],
        });
        let vcpus: Vec<_> = (0..2)
            .map(|vcpu| {
                let (list, kernel) = (Arc::clone(&list), Arc::clone(&kernel));
                thread::spawn(move || vcpu_run(&list, &kernel, vcpu, vcpu_msrs[vcpu]))
            })
            .collect();
        let generation = list
            .replace(Table(handled(2)), |_| {
                kernel.set_filter(2);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(generation, 2);
        list.reclaim();
        for vcpu in vcpus {
            vcpu.join().unwrap();
        }
        // Every vCPU passed a quiescent point or left: nothing retired may remain.
        for vcpu in 0..2 {
            list.leave(vcpu);
        }
        assert_eq!(list.reclaim(), 0);
    });
    println!(
        "loom explored {} executions ({broken:?}, MSRs {vcpu_msrs:?})",
        executions.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// vCPU 0 touches the MSR only the old table handles (its exit may be in flight across the
/// replacement), vCPU 1 the one only the new table handles.
#[test]
fn replacement_loses_no_exit_and_frees_nothing_in_use() {
    model(Broken::No, [0, 1]);
}

/// Both vCPUs touch the MSR both tables handle.
#[test]
fn shared_msr_is_served_by_a_table_at_least_as_new_as_its_filter() {
    model(Broken::No, [2, 2]);
}

/// Publishing the new table only after the ioctl: an exit of the new filter finds no handler.
#[test]
#[should_panic(expected = "found no handler")]
fn broken_publish_after_install_is_caught() {
    model(Broken::PublishAfterInstall, [0, 1]);
}

/// Freeing the old table as soon as the ioctl returns: an old exit in flight loses its handler.
#[test]
#[should_panic(expected = "reclaimed table")]
fn broken_reclaim_without_grace_is_caught() {
    model(Broken::ReclaimWithoutGrace, [0, 1]);
}

/// A failed ioctl: the new table is withdrawn and the old one keeps serving.
#[test]
fn failed_replacement_keeps_the_old_table_in_force() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let list = Arc::new(Generational::new(1, Table(handled(1))));
        let kernel = Arc::new(Kernel {
            filter: AtomicU64::new(1),
            deciding: [AtomicBool::new(false), AtomicBool::new(false)],
        });
        let vcpu = {
            let (list, kernel) = (Arc::clone(&list), Arc::clone(&kernel));
            thread::spawn(move || vcpu_run(&list, &kernel, 0, 0))
        };
        let result = list.replace(Table(handled(2)), |_| Err::<(), _>("EINVAL"));
        assert_eq!(result, Err("EINVAL"));
        vcpu.join().unwrap();
        // The old table serves MSR 0 again for anyone.
        list.enter(0).unwrap();
        let found = list
            .with_table(0, 0, AccessType::Read, |t, g| {
                (t.handles(0, AccessType::Read), g)
            })
            .unwrap();
        assert_eq!(found, (true, 1));
        list.leave(0);
        assert_eq!(list.reclaim(), 0);
    });
}
