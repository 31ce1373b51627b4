//! `msrfilter check` and `msrfilter explain`: the packed filter and its decisions, no kernel
//! needed.

use msr_core::{names, Decider, Filter, Range};

use crate::{insn, msr_label, plural, AccessArg, Failure, Loaded};

/// `msrfilter check POLICY`.
pub fn check(path: &str) -> Result<(), Failure> {
    let loaded = Loaded::read(path)?;
    let packed = loaded.pack()?;
    println!(
        "{}: {} rules, default {}",
        loaded.name,
        loaded.policy.rules().len(),
        loaded.policy.default_action()
    );
    print_filter(&packed.filter);
    println!(
        "total: {}, {} bitmap bytes; proven_minimal: {}",
        plural(packed.filter.range_count(), "range"),
        packed.filter.bitmap_bytes(),
        if packed.proven_minimal {
            "yes"
        } else {
            "no (a search bound was hit; the filter is exact but may not be the smallest)"
        }
    );
    for lint in packed.filter.lints() {
        println!("warning: {lint}");
    }
    println!("ok");
    Ok(())
}

/// Prints a filter's default action and its range table.
pub fn print_filter(filter: &Filter) {
    println!(
        "filter: default {} (flags {:#x})",
        filter.default_action(),
        filter.flags()
    );
    if filter.range_count() == 0 {
        println!("  (no ranges)");
        return;
    }
    println!(
        "{:>4}  {:<10}  {:<10}  {:>6}  {:<5}  {:>12}  names",
        "slot", "base", "last", "nmsrs", "flags", "bitmap bytes"
    );
    for (slot, range) in filter.used_ranges() {
        let last = range.base().wrapping_add(range.nmsrs() - 1);
        println!(
            "{:>4}  {:<10}  {:<10}  {:>6}  {:<5}  {:>12}  {}",
            slot,
            format!("{:#x}", range.base()),
            format!("{last:#x}"),
            range.nmsrs(),
            range.flags().as_str(),
            range.bitmap_bytes(),
            range_names(range),
        );
    }
}

/// The names of a range's ends: `NAME`, `FIRST..LAST`, `FIRST..`, `..LAST`, or `-`.
fn range_names(range: &Range) -> String {
    let last = range.base().wrapping_add(range.nmsrs() - 1);
    match (names::name_of(range.base()), names::name_of(last)) {
        (Some(first), _) if range.nmsrs() == 1 => first.to_string(),
        (Some(first), Some(last)) => format!("{first}..{last}"),
        (Some(first), None) => format!("{first}.."),
        (None, Some(last)) => format!("..{last}"),
        (None, None) => "-".to_string(),
    }
}

/// `slot 0 (rw 0x0-0x2fff)`.
fn describe_slot(filter: &Filter, slot: usize) -> String {
    let range = &filter.ranges()[slot];
    let last = range.base().wrapping_add(range.nmsrs().saturating_sub(1));
    if range.nmsrs() == 1 {
        format!("slot {slot} ({} {:#x})", range.flags(), range.base())
    } else {
        format!(
            "slot {slot} ({} {:#x}-{last:#x})",
            range.flags(),
            range.base()
        )
    }
}

/// `msrfilter explain POLICY MSR [r|w|rw]`.
pub fn explain(path: &str, index: u32, access: AccessArg) -> Result<(), Failure> {
    let loaded = Loaded::read(path)?;
    let filter = loaded.pack()?.filter;
    let mut disagreements = 0;
    for &a in access.types() {
        let why = filter.explain(index, a);
        let reason = match why.decider {
            Decider::X2apic => {
                "x2APIC MSRs 0x800-0x8ff are never filtered by the kernel".to_string()
            }
            Decider::Range { slot, bit } => {
                format!("{} bit {bit:#x}", describe_slot(&filter, slot))
            }
            Decider::Default => format!("no range matches: default {}", filter.default_action()),
            Decider::NoFilter => {
                "the filter is empty (default allow, no ranges): installing it removes filtering"
                    .to_string()
            }
        };
        println!(
            "{} {}: {} — {reason}",
            insn(a),
            msr_label(index),
            why.action
        );
        let policy_action = loaded.policy.decide(index, a);
        let decided_by = match loaded.policy.deciding_rule(index, a) {
            Some(rule) => loaded.describe_rule(rule),
            None if why.decider == Decider::X2apic => {
                "the kernel, whatever the policy says (the policy allows x2APIC MSRs)".to_string()
            }
            None => loaded.describe_default(),
        };
        println!("  policy: {policy_action}, decided by {decided_by}");
        if policy_action != why.action {
            disagreements += 1;
            println!(
                "  BUG: the packed filter decides {} but the policy wants {policy_action}",
                why.action
            );
        }
    }
    if disagreements > 0 {
        return Err(Failure::new(format!(
            "the packed filter disagrees with the policy on {disagreements} access(es) of {}",
            msr_label(index)
        )));
    }
    Ok(())
}
