//! Well-known MSR names (placeholder until the full table lands).

/// Name of `index` if known.
pub fn name_of(index: u32) -> Option<&'static str> {
    match index {
        0x48 => Some("IA32_SPEC_CTRL"),
        _ => None,
    }
}

/// Index of a known name.
pub fn index_of(name: &str) -> Option<u32> {
    if name.eq_ignore_ascii_case("IA32_SPEC_CTRL") {
        Some(0x48)
    } else {
        None
    }
}

/// Inclusive range of a named group.
pub fn group_of(name: &str) -> Option<(u32, u32)> {
    if name.eq_ignore_ascii_case("HYPERV") {
        Some((0x4000_0000, 0x4000_00ff))
    } else {
        None
    }
}
