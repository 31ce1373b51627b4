//! `msrfilter demo --swap`: a live replacement on the real kernel. Two vCPU threads of one VM
//! read three MSRs in loops while the main thread replaces the dispatcher (and the kernel
//! filter) 200 times, alternating two tables:
//!
//! - table A intercepts SYSENTER_CS reads (a constant tagged A) and 0x4b564dff;
//! - table B intercepts SYSENTER_ESP reads (a constant tagged B) and 0x4b564dff;
//!
//! 0x4b564dff is one shadow register both tables share. Every exit's value says which table's
//! handler served it; an access no filter intercepts is handled by KVM itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use kvm_ioctls::{MsrExitReason, VcpuExit, VmFd};
use msr_filter_core::{Access, Action, Policy};
use msr_filter_kvm::guest::{GuestResult, GuestVcpu, GuestVm, MsrAccess};
use msr_filter_kvm::handlers::{Constant, Shadow};
use msr_filter_kvm::{Dispatcher, LiveDispatcher, MsrInterception};

use crate::report::outln;
use crate::{msr_label, Failure};

const SYSENTER_CS: u32 = 0x174;
const SYSENTER_ESP: u32 = 0x175;
const SHARED: u32 = 0x4b56_4dff;
const SHARED_VALUE: u64 = 0x5eed;
const MSRS: [u32; 3] = [SYSENTER_CS, SYSENTER_ESP, SHARED];
const REPLACEMENTS: usize = 200;

/// Table `tag`'s constant for `msr`: the tag in the high half.
fn tagged(tag: u64, msr: u32) -> u64 {
    tag << 32 | u64::from(msr)
}

fn table(tag: u64, shared: &Arc<Shadow>) -> Result<Dispatcher, Failure> {
    let msr = if tag == 0xa {
        SYSENTER_CS
    } else {
        SYSENTER_ESP
    };
    Dispatcher::builder(&Policy::<1>::new(Action::Allow))
        .handle(msr, Access::READ, Constant::new(tagged(tag, msr)))
        .and_then(|b| b.handle(SHARED, Access::READ_WRITE, Arc::clone(shared)))
        .and_then(|b| b.build())
        .map_err(Failure::new)
}

/// Per MSR: accesses, exits served by A, by B (or the shared register), mis-routed, #GP.
#[derive(Default)]
struct Row {
    reads: AtomicU64,
    by_a: AtomicU64,
    by_b: AtomicU64,
    shared: AtomicU64,
    misrouted: AtomicU64,
    gp: AtomicU64,
}

fn vcpu_loop(
    vcpu: &mut GuestVcpu,
    v: usize,
    live: &LiveDispatcher<Arc<VmFd>>,
    stop: &AtomicBool,
    rows: &[Row; 3],
) -> Result<(), Failure> {
    let mut round = 0;
    while !stop.load(Relaxed) || round < MSRS.len() {
        let k = (round + v) % MSRS.len();
        round += 1;
        let row = &rows[k];
        live.enter_run(v);
        let stats = vcpu.run_repeated(MsrAccess::Read { index: MSRS[k] }, 100, &mut |exit| {
            live.dispatch(v, exit);
            if let VcpuExit::X86Rdmsr(e) = exit {
                let counter = match (*e.error, *e.data >> 32, e.index) {
                    (1, _, _) => &row.gp,
                    (0, _, SHARED) if *e.data == SHARED_VALUE => &row.shared,
                    (0, 0xa, SYSENTER_CS) => &row.by_a,
                    (0, 0xb, SYSENTER_ESP) => &row.by_b,
                    _ => &row.misrouted,
                };
                counter.fetch_add(1, Relaxed);
            }
            live.enter_run(v);
        })?;
        row.reads.fetch_add(u64::from(stats.retired), Relaxed);
        if stats.result == GuestResult::GeneralProtection {
            row.gp.fetch_add(1, Relaxed);
        }
    }
    live.leave_run(v);
    Ok(())
}

/// `msrfilter demo --swap`.
pub(crate) fn demo_swap() -> Result<(), Failure> {
    let mut g = GuestVm::new()?;
    let mut vcpu1 = g.add_vcpu()?;
    let shared = Arc::new(Shadow::new(2, SHARED_VALUE));
    let msrs = MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty())?;
    let live = LiveDispatcher::new(msrs, 2, table(0xa, &shared)?)?;
    outln!(
        "table A: handlers for rdmsr {} (returns 0xa_...) and {} (shared shadow register)",
        msr_label(SYSENTER_CS),
        msr_label(SHARED)
    );
    outln!(
        "table B: handlers for rdmsr {} (returns 0xb_...) and {} (the same register)",
        msr_label(SYSENTER_ESP),
        msr_label(SHARED)
    );
    outln!("2 vCPU threads read the three MSRs in loops of 100; the main thread replaces A and B {REPLACEMENTS} times.");
    let stop = AtomicBool::new(false);
    let rows: [Row; 3] = Default::default();
    let mut most_retired = 0;
    let result = std::thread::scope(|s| -> Result<(), Failure> {
        let (live, stop, rows) = (&live, &stop, &rows);
        let vcpu0 = g.vcpu();
        let t0 = s.spawn(move || vcpu_loop(vcpu0, 0, live, stop, rows));
        let vcpu1 = &mut vcpu1;
        let t1 = s.spawn(move || vcpu_loop(vcpu1, 1, live, stop, rows));
        let mut replaced = Ok(());
        for i in 0..REPLACEMENTS {
            let tag = if i % 2 == 0 { 0xb } else { 0xa };
            match table(tag, &shared).and_then(|t| live.replace(t).map_err(Failure::from)) {
                Ok(r) => most_retired = most_retired.max(r.retired),
                Err(e) => {
                    replaced = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Relaxed);
        let joined = |t: std::thread::ScopedJoinHandle<'_, Result<(), Failure>>| {
            t.join()
                .unwrap_or_else(|_| Err(Failure::new("a vCPU thread panicked")))
        };
        joined(t0)?;
        joined(t1)?;
        replaced
    });
    result?;
    outln!();
    outln!(
        "{:<28} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5}",
        "rdmsr",
        "reads",
        "in kernel",
        "table A",
        "table B",
        "shared",
        "misrouted",
        "#GP"
    );
    let mut bad = 0;
    for (msr, row) in MSRS.iter().zip(&rows) {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let exits =
            get(&row.by_a) + get(&row.by_b) + get(&row.shared) + get(&row.misrouted) + get(&row.gp);
        bad += get(&row.misrouted) + get(&row.gp);
        outln!(
            "{:<28} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5}",
            msr_label(*msr),
            get(&row.reads),
            get(&row.reads).saturating_sub(exits),
            get(&row.by_a),
            get(&row.by_b),
            get(&row.shared),
            get(&row.misrouted),
            get(&row.gp)
        );
    }
    let left = live.reclaim();
    outln!();
    outln!(
        "{REPLACEMENTS} replacements (generation {}); at most {most_retired} retired tables waited for a vCPU's quiescent point; {left} left after both vCPUs stopped",
        live.generation()
    );
    outln!(
        "shared register after the replacements: {:#x} on both vCPUs",
        shared.value(0).unwrap_or(0)
    );
    if bad != 0 || left != 0 || shared.values() != [SHARED_VALUE, SHARED_VALUE] {
        return Err(Failure::new(
            "demo --swap: an exit was mis-routed or a guest got #GP",
        ));
    }
    outln!("demo --swap ok: no exit lost or mis-routed, no #GP");
    Ok(())
}
