//! `msrfilter demo`: a tiny guest reads and writes MSRs under a policy with built-in handlers.
//!
//! Every access's outcome is predicted from the packed filter and a model of the handlers, and
//! checked, so the demo doubles as a smoke test of the whole stack on the real kernel.

use std::collections::HashMap;
use std::sync::Arc;

use kvm_ioctls::{MsrExitReason, VcpuExit};
use msr_filter_core::{names, Access, AccessType, Action, Filter};
use msr_filter_kvm::guest::{GuestResult, MsrAccess, Outcome};
use msr_filter_kvm::handlers::{self, Counting, OnWrite, Shadow};
use msr_filter_kvm::{BuildError, Dispatcher, DispatcherBuilder};

use crate::check::print_filter;
use crate::report::outln;
use crate::verify::guest_with_filter;
use crate::{insn, Failure, Loaded};

/// The built-in policy: `examples/demo.policy`.
pub const DEMO_POLICY: &str = include_str!("../../../examples/demo.policy");

/// The value the demo's IA32_ARCH_CAPABILITIES reads: RDCL_NO | SKIP_L1DFL_VMENTRY | MDS_NO.
const ARCH_CAPABILITIES: u64 = 0x29;
/// CORE_THREAD_COUNT: 1 core, 1 thread.
const CORE_THREAD_COUNT: u64 = 0x0001_0001;

/// What one of the demo's handlers is, for registering it and predicting what it does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Constant(u64),
    Shadow,
    WriteIgnore,
    CountingShadow,
    ReadOnlyConstant(u64),
}

struct HandlerSpec {
    index: u32,
    access: Access,
    kind: Kind,
    label: &'static str,
}

const HANDLERS: [HandlerSpec; 5] = [
    HandlerSpec {
        index: 0x35,
        access: Access::READ,
        kind: Kind::Constant(CORE_THREAD_COUNT),
        label: "Constant",
    },
    HandlerSpec {
        index: 0xc000_0103,
        access: Access::READ_WRITE,
        kind: Kind::Shadow,
        label: "Shadow",
    },
    HandlerSpec {
        index: 0x49,
        access: Access::WRITE,
        kind: Kind::WriteIgnore,
        label: "WriteIgnore",
    },
    HandlerSpec {
        index: 0x4b56_4dff,
        access: Access::READ_WRITE,
        kind: Kind::CountingShadow,
        label: "Counting(Shadow)",
    },
    HandlerSpec {
        index: 0x10a,
        access: Access::READ_WRITE,
        kind: Kind::ReadOnlyConstant(ARCH_CAPABILITIES),
        label: "ReadOnly(Constant, OnWrite::Gp)",
    },
];

fn handler_for(index: u32, access: AccessType) -> Option<&'static HandlerSpec> {
    HANDLERS
        .iter()
        .find(|h| h.index == index && h.access.includes(access))
}

fn register(
    builder: DispatcherBuilder,
    spec: &HandlerSpec,
    counting: &Arc<Counting<Shadow>>,
) -> Result<DispatcherBuilder, BuildError> {
    let (index, access) = (spec.index, spec.access);
    match spec.kind {
        Kind::Constant(v) => builder.handle(index, access, handlers::Constant::new(v)),
        Kind::Shadow => builder.handle(index, access, Shadow::new(1, 0)),
        Kind::WriteIgnore => builder.handle(index, access, handlers::WriteIgnore),
        Kind::CountingShadow => builder.handle(index, access, Arc::clone(counting)),
        Kind::ReadOnlyConstant(v) => builder.handle(
            index,
            access,
            handlers::ReadOnly::new(handlers::Constant::new(v), OnWrite::Gp),
        ),
    }
}

/// What KVM itself does with an access the filter allows.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// KVM knows the MSR and completes the access in the kernel: no exit.
    Handles,
    /// KVM does not know the MSR: an UNKNOWN exit (unless the host sets `kvm.ignore_msrs`).
    Unknown,
    /// KVM refuses the value: an INVAL exit.
    Inval,
}

struct Step {
    access: MsrAccess,
    kernel: Kernel,
    /// What to call an MSR without a well-known name.
    about: &'static str,
}

const fn rd(index: u32, kernel: Kernel, about: &'static str) -> Step {
    Step {
        access: MsrAccess::Read { index },
        kernel,
        about,
    }
}

const fn wr(index: u32, value: u64, kernel: Kernel, about: &'static str) -> Step {
    Step {
        access: MsrAccess::Write { index, value },
        kernel,
        about,
    }
}

/// The guest's accesses, in order.
const STEPS: [Step; 15] = [
    rd(0x10, Kernel::Handles, ""),
    rd(0x35, Kernel::Handles, ""),
    rd(0xc000_0103, Kernel::Handles, ""),
    wr(0xc000_0103, 0x2a, Kernel::Handles, ""),
    rd(0xc000_0103, Kernel::Handles, ""),
    wr(0x49, 1, Kernel::Handles, ""),
    wr(0x4b56_4dff, 0x1234_5678_9abc, Kernel::Unknown, "fabricated"),
    rd(0x4b56_4dff, Kernel::Unknown, "fabricated"),
    rd(0x10a, Kernel::Handles, ""),
    wr(0x10a, 0, Kernel::Handles, ""),
    rd(0x474f_4f00, Kernel::Unknown, "fabricated"),
    wr(0x474f_4f00, 1, Kernel::Unknown, "fabricated"),
    rd(0x1234_5678, Kernel::Unknown, "unknown"),
    wr(0x1234_5678, 5, Kernel::Unknown, "unknown"),
    // EFER bit 63 is reserved: KVM refuses the write.
    wr(0xc000_0080, 1 << 63, Kernel::Inval, ""),
];

/// How an access should end, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// A read that completes with whatever the kernel has (e.g. the TSC).
    AnyValue,
    Value(u64),
    /// A write that completes.
    Ok,
    Gp,
}

/// The exits each route should count, and the handlers' expected (reads, writes, faults).
#[derive(Default, Debug, PartialEq, Eq)]
struct Counts {
    unknown: u64,
    inval: u64,
    unhandled: u64,
    route_faults: u64,
    handlers: HashMap<u32, (u64, u64, u64)>,
}

/// The model the demo checks the kernel and the dispatcher against.
struct Model<'a> {
    filter: &'a Filter,
    ignore_unknown: bool,
    host_ignore_msrs: bool,
    /// Shadow registers' values.
    shadows: HashMap<u32, u64>,
    counts: Counts,
}

impl Model<'_> {
    /// The exit reason and the outcome `step` should have; updates the handlers' state.
    fn expect(&mut self, step: &Step) -> (Option<MsrExitReason>, Expected) {
        let (index, access, value) = split(step.access);
        if let Some(h) = handler_for(index, access) {
            let write = access == AccessType::Write;
            let result = match (h.kind, write) {
                (Kind::Constant(v) | Kind::ReadOnlyConstant(v), false) => Expected::Value(v),
                (Kind::Shadow | Kind::CountingShadow, false) => {
                    Expected::Value(self.shadows.get(&index).copied().unwrap_or(0))
                }
                (Kind::Shadow | Kind::CountingShadow, true) => {
                    self.shadows.insert(index, value);
                    Expected::Ok
                }
                (Kind::WriteIgnore, true) => Expected::Ok,
                (Kind::WriteIgnore, false)
                | (Kind::Constant(_) | Kind::ReadOnlyConstant(_), true) => Expected::Gp,
            };
            let c = self.counts.handlers.entry(index).or_default();
            if write {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
            c.2 += u64::from(result == Expected::Gp);
            return (Some(MsrExitReason::Filter), result);
        }
        let completed = if access == AccessType::Read {
            Expected::Value(0)
        } else {
            Expected::Ok
        };
        if self.filter.decide(index, access) == Action::Deny {
            self.counts.unhandled += 1;
            self.counts.route_faults += 1;
            return (Some(MsrExitReason::Filter), Expected::Gp);
        }
        match step.kernel {
            Kernel::Handles => (
                None,
                if access == AccessType::Read {
                    Expected::AnyValue
                } else {
                    Expected::Ok
                },
            ),
            Kernel::Unknown if self.host_ignore_msrs => (None, completed),
            Kernel::Unknown => {
                self.counts.unknown += 1;
                if self.ignore_unknown {
                    (Some(MsrExitReason::Unknown), completed)
                } else {
                    self.counts.route_faults += 1;
                    (Some(MsrExitReason::Unknown), Expected::Gp)
                }
            }
            Kernel::Inval => {
                self.counts.inval += 1;
                self.counts.route_faults += 1;
                (Some(MsrExitReason::Inval), Expected::Gp)
            }
        }
    }
}

fn split(access: MsrAccess) -> (u32, AccessType, u64) {
    match access {
        MsrAccess::Read { index } => (index, AccessType::Read, 0),
        MsrAccess::Write { index, value } => (index, AccessType::Write, value),
    }
}

fn matches(expected: Expected, actual: GuestResult) -> bool {
    match (expected, actual) {
        (Expected::AnyValue, GuestResult::Completed { value: Some(_) }) => true,
        (Expected::Value(v), GuestResult::Completed { value: Some(w) }) => v == w,
        (Expected::Ok, GuestResult::Completed { value: None }) => true,
        (Expected::Gp, GuestResult::GeneralProtection) => true,
        _ => false,
    }
}

fn reason_word(reason: Option<MsrExitReason>) -> &'static str {
    match reason {
        None => "—",
        Some(r) if r == MsrExitReason::Filter => "FILTER",
        Some(r) if r == MsrExitReason::Unknown => "UNKNOWN",
        Some(r) if r == MsrExitReason::Inval => "INVAL",
        Some(_) => "?",
    }
}

fn result_text(result: GuestResult) -> String {
    match result {
        GuestResult::Completed { value: Some(v) } => format!("{v:#x}"),
        GuestResult::Completed { value: None } => "ok".to_string(),
        GuestResult::GeneralProtection => "#GP".to_string(),
    }
}

fn expected_text(exit: Option<MsrExitReason>, result: Expected) -> String {
    let outcome = match result {
        Expected::AnyValue => "a value".to_string(),
        Expected::Value(v) => format!("{v:#x}"),
        Expected::Ok => "ok".to_string(),
        Expected::Gp => "#GP".to_string(),
    };
    format!("{} {outcome}", reason_word(exit))
}

/// Who completed an access, from the exit the kernel actually made.
fn handled_by(outcome: &Outcome, access: AccessType, ignore_unknown: bool) -> String {
    let Some(exit) = outcome.exit else {
        return "kernel".to_string();
    };
    if let Some(h) = handler_for(exit.index, access) {
        return h.label.to_string();
    }
    if exit.reason == MsrExitReason::Unknown && ignore_unknown {
        "ignore_unknown_msrs route".to_string()
    } else if exit.reason == MsrExitReason::Unknown {
        "fail-closed (UNKNOWN route)".to_string()
    } else if exit.reason == MsrExitReason::Inval {
        "fail-closed (INVAL route)".to_string()
    } else {
        "fail-closed (denied, no handler)".to_string()
    }
}

/// Whether the host sets `kvm.ignore_msrs`, which makes KVM complete unknown-MSR accesses itself.
fn host_ignore_msrs() -> bool {
    std::fs::read_to_string("/sys/module/kvm/parameters/ignore_msrs")
        .is_ok_and(|s| matches!(s.trim(), "Y" | "y" | "1"))
}

/// `msrfilter demo [--policy FILE] [--ignore-msrs]`.
pub fn demo(policy: Option<&str>, ignore_unknown: bool) -> Result<(), Failure> {
    let mut loaded = match policy {
        Some(path) => Loaded::read(path)?,
        None => Loaded::from_bytes("<built-in demo policy>".into(), DEMO_POLICY.as_bytes())?,
    };
    match policy {
        Some(_) => outln!("policy {}:", loaded.name),
        None => outln!("policy (built in; the same as examples/demo.policy):"),
    }
    for line in loaded.text.lines() {
        outln!("    {line}");
    }
    for h in &HANDLERS {
        loaded.extra_rules.push(format!(
            "the demo's {} handler: deny {} {}",
            h.label,
            h.access,
            crate::msr_label(h.index)
        ));
    }
    let counting = Arc::new(Counting::new(Shadow::new(1, 0)));
    let mut builder = Dispatcher::builder(loaded.view());
    if ignore_unknown {
        builder = builder.ignore_unknown_msrs();
    }
    let built = HANDLERS
        .iter()
        .try_fold(builder, |b, h| register(b, h, &counting))
        .and_then(DispatcherBuilder::build);
    let dispatcher = match built {
        Ok(d) => d,
        Err(BuildError::Pack(e)) => return Err(loaded.pack_failure(&e)),
        Err(e) => return Err(Failure::located(format!("{}: {e}", loaded.name))),
    };
    outln!();
    outln!("handlers (registering one intercepts its MSR: the filter denies it so it exits):");
    for h in &HANDLERS {
        outln!(
            "    {:<3} {:<32} {}",
            h.access.as_str(),
            crate::msr_label(h.index),
            h.label
        );
    }
    outln!();
    print_filter(dispatcher.filter());
    let host_ignore = host_ignore_msrs();
    outln!();
    outln!(
        "user-space MSR exits: FILTER | UNKNOWN | INVAL; MSRs unknown to KVM: {}",
        if ignore_unknown {
            "read 0, writes dropped (--ignore-msrs)"
        } else {
            "#GP (fail closed; --ignore-msrs reads them as 0)"
        }
    );
    if host_ignore {
        outln!(
            "note: this host sets kvm.ignore_msrs=Y, so KVM completes unknown-MSR accesses itself (no UNKNOWN exits)"
        );
    }

    let (mut vm, _msrs) = guest_with_filter(
        dispatcher.filter(),
        MsrExitReason::Unknown | MsrExitReason::Inval,
    )?;
    let mut model = Model {
        filter: dispatcher.filter(),
        ignore_unknown,
        host_ignore_msrs: host_ignore,
        shadows: HashMap::new(),
        counts: Counts::default(),
    };
    outln!();
    outln!(
        "{:>2}  {:<6} {:<10}  {:<22}  {:<18}  {:<7}  {:<18}  {:<32}  check",
        "#",
        "access",
        "msr",
        "name",
        "written",
        "exit",
        "outcome",
        "handled by"
    );
    let mut mismatches = Vec::new();
    for (n, step) in STEPS.iter().enumerate() {
        let (index, access, value) = split(step.access);
        let (want_exit, want) = model.expect(step);
        let outcome = vm.run(step.access, &mut |exit: &mut VcpuExit<'_>| {
            dispatcher.dispatch(0, exit);
        })?;
        let exit = outcome.exit.map(|e| e.reason);
        let ok = exit == want_exit && matches(want, outcome.result);
        let name = names::name_of(index).unwrap_or(step.about);
        let check = if ok {
            "✓".to_string()
        } else {
            format!("✗ expected {}", expected_text(want_exit, want))
        };
        outln!(
            "{:>2}  {:<6} {:<10}  {:<22}  {:<18}  {:<7}  {:<18}  {:<32}  {check}",
            n + 1,
            insn(access),
            format!("{index:#x}"),
            name,
            if access == AccessType::Write {
                format!("{value:#x}")
            } else {
                "-".to_string()
            },
            reason_word(exit),
            result_text(outcome.result),
            handled_by(&outcome, access, ignore_unknown),
        );
        if !ok {
            mismatches.push(format!(
                "access {} ({} {index:#x}): got {} {}, expected {}",
                n + 1,
                insn(access),
                reason_word(exit),
                result_text(outcome.result),
                expected_text(want_exit, want)
            ));
        }
    }

    outln!();
    outln!(
        "{:<32}  {:<10}  {:<22}  {:<6}  {:>5}  {:>6}  {:>6}",
        "handler",
        "msr",
        "name",
        "access",
        "reads",
        "writes",
        "faults"
    );
    for s in dispatcher.handler_stats() {
        let label = HANDLERS
            .iter()
            .find(|h| h.index == s.first)
            .map_or("?", |h| h.label);
        let msrs = if s.first == s.last {
            format!("{:#x}", s.first)
        } else {
            format!("{:#x}-{:#x}", s.first, s.last)
        };
        outln!(
            "{label:<32}  {msrs:<10}  {:<22}  {:<6}  {:>5}  {:>6}  {:>6}",
            s.name.unwrap_or("-"),
            s.access.as_str(),
            s.reads,
            s.writes,
            s.faults
        );
        let want = model
            .counts
            .handlers
            .get(&s.first)
            .copied()
            .unwrap_or_default();
        if (s.reads, s.writes, s.faults) != want {
            mismatches.push(format!(
                "handler {label} at {:#x} counted (reads, writes, faults) {:?}, expected {want:?}",
                s.first,
                (s.reads, s.writes, s.faults)
            ));
        }
    }
    let (reads, writes) = counting.counts();
    outln!("Counting(Shadow) at 0x4b564dff saw {reads} reads and {writes} writes");

    let r = dispatcher.route_stats();
    outln!();
    outln!("{:<40}  {:>5}", "route (exits no handler took)", "exits");
    outln!("{:<40}  {:>5}", "UNKNOWN", r.unknown);
    outln!("{:<40}  {:>5}", "INVAL", r.inval);
    outln!(
        "{:<40}  {:>5}",
        "FILTER, unhandled (fail closed)",
        r.unhandled
    );
    outln!("{:<40}  {:>5}", "of these, ended in #GP", r.faults);
    let per_msr = dispatcher.route_msr_stats();
    if !per_msr.is_empty() {
        outln!();
        outln!(
            "{:<40}  {:>5}  {:>6}",
            "MSR (exits no handler took)",
            "reads",
            "writes"
        );
        for m in &per_msr {
            let label = match m.name {
                Some(n) => format!("{:#x} ({n})", m.index),
                None => format!("{:#x}", m.index),
            };
            outln!("{label:<40}  {:>5}  {:>6}", m.reads, m.writes);
        }
    }
    let routed: u64 = per_msr.iter().map(|m| m.reads + m.writes).sum();
    if routed + r.untracked != r.unknown + r.inval + r.unhandled {
        mismatches.push(format!(
            "per-MSR route counters sum to {routed}, route counters to {}",
            r.unknown + r.inval + r.unhandled
        ));
    }
    let c = &model.counts;
    let want_routes = (c.unknown, c.inval, c.unhandled, c.route_faults);
    let got_routes = (r.unknown, r.inval, r.unhandled, r.faults);
    if got_routes != want_routes {
        mismatches.push(format!(
            "route counters (unknown, inval, unhandled, faults) are {got_routes:?}, expected {want_routes:?}"
        ));
    }

    outln!();
    if mismatches.is_empty() {
        outln!("demo ok: all {} accesses ended as expected", STEPS.len());
        return Ok(());
    }
    for m in &mismatches {
        outln!("mismatch: {m}");
    }
    Err(Failure::new(format!(
        "demo: {} of the outcomes and counters differ from what the demo expects",
        mismatches.len()
    )))
}
