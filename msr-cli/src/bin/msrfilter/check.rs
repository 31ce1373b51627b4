//! `msrfilter check` and `msrfilter explain`: the packed (or raw) filter and its decisions, no
//! kernel needed.

use msr_filter_cli::json::{explanation_json, to_json};
use msr_filter_core::storm::{exit_storms, ExitStorm};
use msr_filter_core::{names, Decider, Explanation, Filter, Range};
use serde_json::{json, Value};

use crate::raw::{error_json, RawLoaded};
use crate::report::outln;
use crate::{insn, msr_label, plural, print_json, AccessArg, Failure, Format, Loaded};

/// `msrfilter check [--raw] FILE [--format F]`.
pub fn check(path: &str, raw: bool, format: Format) -> Result<(), Failure> {
    if raw {
        check_raw(path, format)
    } else {
        check_policy(path, format)
    }
}

/// `msrfilter check POLICY`.
fn check_policy(path: &str, format: Format) -> Result<(), Failure> {
    let loaded = Loaded::read(path)?;
    let packed = loaded.pack()?;
    let filter = &packed.filter;
    if format == Format::Json {
        let mut report = accepted_json(filter);
        report["proven_minimal"] = json!(packed.proven_minimal);
        print_json(&report);
        return Ok(());
    }
    outln!(
        "{}: {}, default {}",
        loaded.name,
        plural(loaded.rules.len(), "rule"),
        loaded.default
    );
    print_filter(filter);
    outln!(
        "total: {}, {} bitmap bytes; proven_minimal: {}",
        plural(filter.range_count(), "range"),
        filter.bitmap_bytes(),
        if packed.proven_minimal {
            "yes"
        } else {
            "no (a search bound was hit; the filter is exact but may not be the smallest)"
        }
    );
    print_warnings(filter);
    outln!("ok");
    Ok(())
}

/// `msrfilter check --raw FILE.json`: the kernel's verdict.
fn check_raw(path: &str, format: Format) -> Result<(), Failure> {
    let loaded = RawLoaded::read(path)?;
    let filter = match loaded.raw.filter() {
        Ok(filter) => filter,
        Err(e) => {
            if format == Format::Json {
                print_json(&json!({
                    "accepted": false,
                    "error": error_json(&e),
                    "filter": null,
                    "ranges": loaded.ranges_given(),
                    "bitmap_bytes": loaded.bitmap_bytes_given(),
                    "lints": [],
                    "exit_storms": [],
                }));
            }
            return Err(loaded.refusal(&e));
        }
    };
    if format == Format::Json {
        print_json(&accepted_json(&filter));
        return Ok(());
    }
    outln!(
        "{}: raw filter, {} given; the kernel accepts it",
        loaded.name,
        plural(loaded.raw.ranges.len(), "slot")
    );
    print_filter(&filter);
    outln!(
        "total: {}, {} bitmap bytes",
        plural(filter.range_count(), "range"),
        filter.bitmap_bytes()
    );
    print_warnings(&filter);
    outln!("ok");
    Ok(())
}

/// Prints every lint, then every exit storm, as `warning:` lines.
fn print_warnings(filter: &Filter) {
    for lint in filter.lints() {
        outln!("warning: {lint}");
    }
    for storm in exit_storms(filter) {
        outln!("warning: {storm}");
    }
}

/// The `check --format json` report of a filter the kernel accepts.
fn accepted_json(filter: &Filter) -> Value {
    let lints: Vec<String> = filter.lints().iter().map(ToString::to_string).collect();
    let storms: Vec<Value> = exit_storms(filter).iter().map(storm_json).collect();
    json!({
        "accepted": true,
        "error": null,
        "filter": to_json(filter),
        "ranges": filter.range_count(),
        "bitmap_bytes": filter.bitmap_bytes(),
        "lints": lints,
        "exit_storms": storms,
    })
}

/// `{"msr": "0xc0000100", "name": "FS_BASE", "denied": "r", "message": ...}`.
fn storm_json(storm: &ExitStorm) -> Value {
    json!({
        "msr": format!("{:#x}", storm.msr.index),
        "name": storm.msr.name(),
        "denied": storm.denied.as_str(),
        "message": storm.to_string(),
    })
}

/// Prints a filter's default action and its range table.
pub fn print_filter(filter: &Filter) {
    outln!(
        "filter: default {} (flags {:#x})",
        filter.default_action(),
        filter.flags()
    );
    if filter.range_count() == 0 {
        outln!("  (no ranges)");
        return;
    }
    outln!(
        "{:>4}  {:<10}  {:<10}  {:>6}  {:<5}  {:>12}  names",
        "slot",
        "base",
        "last",
        "nmsrs",
        "flags",
        "bitmap bytes"
    );
    for (slot, range) in filter.used_ranges() {
        let last = range.base().wrapping_add(range.nmsrs() - 1);
        outln!(
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

/// What made a filter decide: `slot 0 (w 0x48) bit 0x0`, `no range matches: default allow`, ...
fn filter_reason(filter: &Filter, why: &Explanation) -> String {
    match why.decider {
        Decider::X2apic => format!(
            "x2APIC MSRs {:#x}-{:#x} are never filtered by the kernel",
            msr_filter_core::abi::X2APIC_FIRST,
            msr_filter_core::abi::X2APIC_LAST
        ),
        Decider::Range { slot, bit } => {
            format!("{} bit {bit:#x}", describe_slot(filter, slot))
        }
        Decider::Default => format!("no range matches: default {}", filter.default_action()),
        Decider::NoFilter => {
            "the filter is empty (default allow, no ranges): installing it removes filtering"
                .to_string()
        }
    }
}

/// One JSON object, or an array when there are several.
fn one_or_array(mut values: Vec<Value>) -> Value {
    if values.len() == 1 {
        values.remove(0)
    } else {
        Value::Array(values)
    }
}

/// `msrfilter explain [--raw] FILE MSR [r|w|rw] [--format F]`.
pub fn explain(
    path: &str,
    raw: bool,
    index: u32,
    access: AccessArg,
    format: Format,
) -> Result<(), Failure> {
    if raw {
        explain_raw(path, index, access, format)
    } else {
        explain_policy(path, index, access, format)
    }
}

/// `msrfilter explain --raw FILE.json MSR [r|w|rw]`: the filter's decision only.
fn explain_raw(path: &str, index: u32, access: AccessArg, format: Format) -> Result<(), Failure> {
    let loaded = RawLoaded::read(path)?;
    let filter = loaded.filter()?;
    let mut objects = Vec::new();
    for &a in access.types() {
        let why = filter.explain(index, a);
        match format {
            Format::Text => outln!(
                "{} {}: {} — {}",
                insn(a),
                msr_label(index),
                why.action,
                filter_reason(&filter, &why)
            ),
            Format::Json => objects.push(explanation_json(index, a, &why)),
        }
    }
    if format == Format::Json {
        print_json(&one_or_array(objects));
    }
    Ok(())
}

/// `msrfilter explain POLICY MSR [r|w|rw]`.
fn explain_policy(
    path: &str,
    index: u32,
    access: AccessArg,
    format: Format,
) -> Result<(), Failure> {
    let loaded = Loaded::read(path)?;
    let filter = loaded.pack()?.filter;
    let mut disagreements = 0;
    let mut objects = Vec::new();
    for &a in access.types() {
        let why = filter.explain(index, a);
        let policy_action = loaded.view().decide(index, a);
        let rule = loaded.view().deciding_rule(index, a);
        if format == Format::Json {
            let mut object = explanation_json(index, a, &why);
            object["policy"] = policy_json(&loaded, policy_action.as_str(), rule, &why);
            objects.push(object);
        } else {
            outln!(
                "{} {}: {} — {}",
                insn(a),
                msr_label(index),
                why.action,
                filter_reason(&filter, &why)
            );
            let decided_by = match rule {
                Some(rule) => loaded.describe_rule(rule),
                None if why.decider == Decider::X2apic => {
                    "the kernel, whatever the policy says (the policy allows x2APIC MSRs)"
                        .to_string()
                }
                None => loaded.describe_default(),
            };
            outln!("  policy: {policy_action}, decided by {decided_by}");
        }
        if policy_action != why.action {
            disagreements += 1;
            if format == Format::Text {
                outln!(
                    "  BUG: the packed filter decides {} but the policy wants {policy_action}",
                    why.action
                );
            }
        }
    }
    if format == Format::Json {
        print_json(&one_or_array(objects));
    }
    if disagreements > 0 {
        return Err(Failure::new(format!(
            "the packed filter disagrees with the policy on {disagreements} access(es) of {}",
            msr_label(index)
        )));
    }
    Ok(())
}

/// `{"decision": ..., "decided_by": "rule"|"default"|"x2apic", "rule": N, "text": ..., "line": L}`.
fn policy_json(loaded: &Loaded, decision: &str, rule: Option<usize>, why: &Explanation) -> Value {
    let (decided_by, text, line) = match rule {
        Some(rule) => {
            let source = loaded.source(rule);
            (
                "rule",
                source.map(|s| s.text.clone()),
                source.map(|s| s.line),
            )
        }
        None if why.decider == Decider::X2apic => ("x2apic", None, None),
        None => {
            let (text, line) = loaded.default_text_and_line();
            ("default", Some(text), line)
        }
    };
    json!({
        "decision": decision,
        "decided_by": decided_by,
        "rule": rule,
        "text": text,
        "line": line,
    })
}
