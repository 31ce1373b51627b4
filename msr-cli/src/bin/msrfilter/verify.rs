//! `msrfilter verify`: the packed filter on the real kernel, probed at every rule boundary.

use std::collections::BTreeSet;
use std::sync::Arc;

use kvm_ioctls::{MsrExitReason, VcpuExit, VmFd};
use msr_filter_core::{abi, AccessType, Action, Filter, Rule};
use msr_filter_kvm::guest::{GuestResult, GuestVm, HarnessError, MsrAccess, Outcome};
use msr_filter_kvm::MsrInterception;

use crate::report::outln;
use crate::{insn, msr_label, plural, Failure, Loaded};

/// MSRs probed whatever the policy: the bottom, both sides of the x2APIC block, the top.
const FIXED_PROBES: [u32; 6] = [
    0,
    abi::X2APIC_FIRST - 1,
    abi::X2APIC_FIRST,
    abi::X2APIC_LAST,
    abi::X2APIC_LAST + 1,
    u32::MAX,
];

/// The interception of a guest's VM; keep it alive while the guest runs.
pub type Interception = MsrInterception<Arc<VmFd>>;

/// A one-vCPU guest whose VM has user-space MSR exits for FILTER plus `extra`, and `filter`
/// installed.
pub fn guest_with_filter(
    filter: &Filter,
    extra: MsrExitReason,
) -> Result<(GuestVm, Interception), Failure> {
    let vm = GuestVm::new()?;
    let mut msrs = MsrInterception::new(vm.kvm(), vm.shared_vm(), extra)?;
    msrs.install(filter)?;
    Ok((vm, msrs))
}

/// Completes every MSR exit with `error = 1`: the guest gets #GP and nothing else happens.
pub fn fail_exit(exit: &mut VcpuExit<'_>) {
    match exit {
        VcpuExit::X86Rdmsr(e) => *e.error = 1,
        VcpuExit::X86Wrmsr(e) => *e.error = 1,
        _ => {}
    }
}

/// The MSRs to probe: first-1, first, last, last+1 of each rule, plus [`FIXED_PROBES`].
fn probe_points(rules: &[Rule]) -> BTreeSet<u32> {
    let mut points: BTreeSet<u32> = FIXED_PROBES.into_iter().collect();
    for r in rules {
        points.extend(r.first.checked_sub(1));
        points.insert(r.first);
        points.insert(r.last);
        points.extend(r.last.checked_add(1));
    }
    points
}

/// What the kernel's filter did with an access: denied it exactly when it exited with FILTER.
fn kernel_decision(outcome: &Outcome) -> (Action, &'static str) {
    let how = match outcome.result {
        GuestResult::Completed { .. } => "completed",
        GuestResult::GeneralProtection => "#GP",
    };
    match outcome.exit {
        Some(e) if e.reason == MsrExitReason::Filter => (Action::Deny, "FILTER exit"),
        Some(_) => (Action::Allow, "other MSR exit"),
        None => (Action::Allow, how),
    }
}

/// `msrfilter verify POLICY [--verbose]`.
pub fn verify(path: &str, verbose: bool) -> Result<(), Failure> {
    let loaded = Loaded::read(path)?;
    let packed = loaded.pack()?;
    let filter = &packed.filter;
    let probes = probe_points(&loaded.rules);
    let (mut vm, mut _msrs) = guest_with_filter(filter, MsrExitReason::empty())?;
    outln!(
        "{}: installed a filter with default {}, {}; probing {} for rdmsr and wrmsr",
        loaded.name,
        filter.default_action(),
        plural(filter.range_count(), "range"),
        plural(probes.len(), "MSR")
    );
    let (mut total, mut agree) = (0usize, 0usize);
    let mut disagreements = Vec::new();
    for &index in &probes {
        for access in AccessType::ALL {
            let run = match access {
                AccessType::Read => MsrAccess::Read { index },
                AccessType::Write => MsrAccess::Write { index, value: 0 },
            };
            let model = filter.decide(index, access);
            let wanted = loaded.view().decide(index, access);
            let label = format!("{} {}", insn(access), msr_label(index));
            total += 1;
            let line = match vm.run(run, &mut fail_exit) {
                Ok(outcome) => {
                    let (kernel, how) = kernel_decision(&outcome);
                    let ok = kernel == model && model == wanted;
                    let line = format!(
                        "{label}: kernel {kernel} ({how}), filter {model}, policy {wanted} — {}",
                        if ok { "agree" } else { "DISAGREE" }
                    );
                    if ok {
                        agree += 1;
                        if verbose {
                            outln!("{line}");
                        }
                        None
                    } else {
                        Some(line)
                    }
                }
                Err(e @ (HarnessError::UnexpectedExit(_) | HarnessError::UnexpectedVector(_))) => {
                    // The vCPU may be half-way through something: start over with a fresh VM.
                    (vm, _msrs) = guest_with_filter(filter, MsrExitReason::empty())?;
                    Some(format!(
                        "{label}: the guest behaved unexpectedly ({e}); filter {model}, policy {wanted} — DISAGREE"
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(line) = line {
                if verbose {
                    outln!("{line}");
                }
                disagreements.push(line);
            }
        }
    }
    outln!(
        "{total} probes, {agree} agree, {} disagree",
        disagreements.len()
    );
    if disagreements.is_empty() {
        return Ok(());
    }
    for line in &disagreements {
        outln!("disagreement: {line}");
    }
    Err(Failure::new(format!(
        "{}: the kernel, the filter model and the policy disagree on {} of {total} probes",
        loaded.name,
        disagreements.len()
    )))
}
