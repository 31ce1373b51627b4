//! `msrfilter from-kvm [--profile FILE]`: an allow-list policy from this host's KVM MSR lists,
//! optionally intersected with a CPU profile's MSRs.

use std::collections::BTreeSet;

use kvm_ioctls::Kvm;
use msr_filter_core::{
    abi, names, parse_msr, runs, storm, Access, Action, MsrText, PolicyView, Quoted, Rule,
};
use msr_filter_kvm::KvmMsrLists;

use crate::report::outln;
use crate::{plural, read_input, Failure};

/// The MSRs of a profile: one per line (number or name, `#` comments) or a JSON array.
fn profile_msrs(name: &str, bytes: &[u8]) -> Result<BTreeSet<u32>, Failure> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| Failure::new(format!("{name}: not UTF-8: {e}")))?;
    let mut msrs = BTreeSet::new();
    if text.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| Failure::new(format!("{name}: not a JSON array of MSRs: {e}")))?;
        for (i, item) in items.iter().enumerate() {
            let index = match item {
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                serde_json::Value::String(s) => match parse_msr(s) {
                    MsrText::Index(index) => Some(index),
                    _ => None,
                },
                _ => None,
            };
            let index = index.ok_or_else(|| {
                Failure::new(format!(
                    "{name}: item {i}: {} is not an MSR (a 32-bit number, or a string with a number or a name)",
                    Quoted(&item.to_string())
                ))
            })?;
            msrs.insert(index);
        }
        return Ok(msrs);
    }
    for (i, line) in text.lines().enumerate() {
        let word = line.split('#').next().unwrap_or("").trim();
        if word.is_empty() {
            continue;
        }
        match parse_msr(word) {
            MsrText::Index(index) => {
                msrs.insert(index);
            }
            MsrText::BadNumber => {
                return Err(Failure::located(format!(
                    "{name}:{}: `{}` is not a 32-bit number (write 0x-prefixed hex or decimal)",
                    i + 1,
                    Quoted(word)
                )))
            }
            MsrText::UnknownName => {
                return Err(Failure::located(format!(
                    "{name}:{}: `{}` is not a known MSR name",
                    i + 1,
                    Quoted(word)
                )))
            }
        }
    }
    Ok(msrs)
}

/// `0x174-0x176` and the names of its ends, for a rule's comment.
fn run_names(first: u32, last: u32) -> Option<String> {
    match (names::name_of(first), names::name_of(last)) {
        (Some(a), _) if first == last => Some(a.to_string()),
        (Some(a), Some(b)) => Some(format!("{a}..{b}")),
        (Some(a), None) => Some(format!("{a}..")),
        (None, Some(b)) => Some(format!("..{b}")),
        (None, None) => None,
    }
}

/// `msrfilter from-kvm [--profile FILE]`.
pub(crate) fn from_kvm(profile: Option<&str>) -> Result<(), Failure> {
    // Read the profile first: a bad profile is the user's error, whatever the host.
    let profile = match profile {
        Some(path) => {
            let (name, bytes) = read_input(path)?;
            Some((profile_msrs(&name, &bytes)?, name))
        }
        None => None,
    };
    let kvm = Kvm::new().map_err(|e| Failure::environment(format!("cannot open /dev/kvm: {e}")))?;
    let lists = KvmMsrLists::query(&kvm)?;
    // MSRs KVM handles but keeps out of its lists: those it passes to the hardware and EFER
    // (saved through KVM_GET_SREGS). A guest needs them, and denying them causes exit storms.
    let outside: BTreeSet<u32> = storm::KVM_PASSTHROUGH
        .iter()
        .map(|p| p.index)
        .chain(names::index_of("EFER"))
        .collect();
    let listed: BTreeSet<u32> = lists.all().into_iter().collect();
    let host: BTreeSet<u32> = listed
        .union(&outside)
        .copied()
        .filter(|&m| !abi::is_x2apic(m))
        .collect();
    let unlisted = host.difference(&listed).count();
    let (allowed, header): (Vec<u32>, Vec<String>) = match &profile {
        None => (
            host.iter().copied().collect(),
            vec![
                format!(
                    "an allow-list of the {} this host's KVM supports:",
                    plural(host.len(), "MSR")
                ),
                format!(
                    "KVM_GET_MSR_INDEX_LIST ({}), KVM_GET_MSR_FEATURE_INDEX_LIST ({}), and {} KVM handles",
                    lists.index.len(),
                    lists.features.len(),
                    plural(unlisted, "MSR")
                ),
                "outside those lists (passed to the hardware, or EFER); x2APIC MSRs left out.".into(),
            ],
        ),
        Some((msrs, name)) => {
            let both: Vec<u32> = host.intersection(msrs).copied().collect();
            let unsupported: Vec<u32> = msrs.difference(&host).copied().collect();
            let mut header = vec![
                format!(
                    "an allow-list of the {} both this host's KVM and the profile {name} list;",
                    plural(both.len(), "MSR")
                ),
                format!(
                    "the {} of this host the profile lacks are denied (default deny).",
                    plural(host.len() - both.len(), "MSR")
                ),
            ];
            if !unsupported.is_empty() {
                let shown: Vec<String> = unsupported
                    .iter()
                    .take(32)
                    .map(|&m| names::Label(m).to_string())
                    .collect();
                header.push(format!(
                    "Not on this host, so left out ({}): {}{}",
                    unsupported.len(),
                    shown.join(", "),
                    if unsupported.len() > 32 { ", ..." } else { "" }
                ));
            }
            (both, header)
        }
    };
    let rules: Vec<Rule> = runs(&allowed)
        .map(|(first, last)| Rule::new(first, last, Access::READ_WRITE, Action::Allow))
        .collect();
    let policy = PolicyView::new(Action::Deny, &rules).map_err(Failure::new)?;
    let packed = msr_filter_kvm::pack(policy)
        .map_err(|e| Failure::new(format!("the generated policy does not pack: {e}")))?;

    outln!("# Generated by msrfilter from-kvm: {}", header[0]);
    for line in &header[1..] {
        outln!("# {line}");
    }
    outln!("default deny");
    for rule in &rules {
        match run_names(rule.first, rule.last) {
            Some(names) => outln!("{rule}  # {names}"),
            None => outln!("{rule}"),
        }
    }
    let filter = &packed.filter;
    outln!(
        "# check: {} rules pack into {}, {} bitmap bytes{}",
        rules.len(),
        plural(filter.range_count(), "range"),
        filter.bitmap_bytes(),
        if packed.proven_minimal {
            " (proven minimal)"
        } else {
            ""
        }
    );
    let lints = filter.lints();
    let storms = storm::exit_storms(filter);
    if lints.is_empty() && storms.is_empty() {
        outln!("# check: no lints, no exit storms");
    }
    for lint in lints.iter() {
        outln!("# check: warning: {lint}");
    }
    for s in storms.iter() {
        outln!("# check: warning: {s}");
    }
    Ok(())
}
