//! `msrfilter diff`: what changes, MSR by MSR, from one policy to another.

use msr_filter_core::{diff as policy_diff, names, Change};

use crate::report::outln;
use crate::{plural, Failure, Loaded, ENVIRONMENT, FAILURE};

/// Exit status 2 for `diff`: a bad policy (1 means "changed").
const BAD_POLICY: u8 = ENVIRONMENT;

/// Reads, parses and packs a policy; every failure exits with [`BAD_POLICY`].
fn load(path: &str) -> Result<Loaded, Failure> {
    let loaded = Loaded::read(path).map_err(|f| f.with_status(BAD_POLICY))?;
    loaded.pack().map_err(|f| f.with_status(BAD_POLICY))?;
    Ok(loaded)
}

/// `msrfilter diff OLD NEW`.
pub fn diff(old_path: &str, new_path: &str) -> Result<(), Failure> {
    if old_path == "-" && new_path == "-" {
        return Err(
            Failure::new("OLD and NEW cannot both be standard input").with_status(BAD_POLICY)
        );
    }
    let old = load(old_path)?;
    let new = load(new_path)?;
    let mut count = 0usize;
    for change in policy_diff(old.view(), new.view()) {
        outln!("{}", describe(&change));
        count += 1;
    }
    outln!("{}", plural(count, "change"));
    if count == 0 {
        Ok(())
    } else {
        Err(Failure::quiet(FAILURE))
    }
}

/// `read  0x10-0x1f (16 MSRs): deny -> allow`, `write 0x48 (IA32_SPEC_CTRL): deny -> allow`.
fn describe(c: &Change) -> String {
    let what = if c.first == c.last {
        match names::name_of(c.first) {
            Some(name) => format!("{:#x} ({name})", c.first),
            None => format!("{:#x}", c.first),
        }
    } else {
        let count = u64::from(c.last) - u64::from(c.first) + 1;
        let ends = match (names::name_of(c.first), names::name_of(c.last)) {
            (Some(first), Some(last)) => format!(", {first}..{last}"),
            (Some(first), None) => format!(", {first}.."),
            (None, Some(last)) => format!(", ..{last}"),
            (None, None) => String::new(),
        };
        format!("{:#x}-{:#x} ({count} MSRs{ends})", c.first, c.last)
    };
    format!(
        "{:<5} {what}: {} -> {}",
        c.access.as_str(),
        c.before,
        c.after
    )
}
