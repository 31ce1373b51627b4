//! The packer on arbitrary policies: packing never fails with an internal error, a packed
//! filter decides as the policy at both sides of every rule boundary, carries no lint, and
//! uses at most 16 ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msr_filter_core::{Access, AccessType, Action, PackError, PolicyView, Rule};

/// Rules from bytes: 8 bytes each (first: 4, span length: 2, access and action: 1, spare: 1),
/// clustered near a few bases so that rules interact.
fn rules(data: &[u8]) -> (Action, Vec<Rule>) {
    let default = if data.first().is_some_and(|b| b & 1 == 1) {
        Action::Deny
    } else {
        Action::Allow
    };
    const BASES: [u32; 4] = [0, 0x4000_0000, 0xc000_0000, 0xffff_0000];
    let rules = data
        .get(1..)
        .unwrap_or(&[])
        .chunks_exact(8)
        .map(|c| {
            let raw = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let base = BASES[(c[7] & 3) as usize];
            let first = base.wrapping_add(raw % 0x2_0000);
            let len = u32::from(u16::from_le_bytes([c[4], c[5]]));
            let last = first.saturating_add(len % 0x8000);
            let access = match c[6] & 3 {
                0 | 3 => Access::READ_WRITE,
                1 => Access::READ,
                _ => Access::WRITE,
            };
            let action = if c[6] & 4 != 0 {
                Action::Deny
            } else {
                Action::Allow
            };
            Rule::new(first, last, access, action)
        })
        .collect();
    (default, rules)
}

fuzz_target!(|data: &[u8]| {
    let (default, rules) = rules(data);
    let policy = PolicyView::new(default, &rules).unwrap();
    match policy.pack() {
        Ok(packed) => {
            let filter = packed.filter;
            assert!(filter.range_count() <= 16);
            assert!(filter.lints().is_empty(), "{:?}", filter.lints());
            for r in &rules {
                for index in [
                    r.first.wrapping_sub(1),
                    r.first,
                    r.last,
                    r.last.wrapping_add(1),
                ] {
                    for access in AccessType::ALL {
                        assert_eq!(
                            filter.decide(index, access),
                            policy.decide(index, access),
                            "{index:#x} {access:?}"
                        );
                    }
                }
            }
        }
        Err(e @ PackError::Internal { .. }) => panic!("packer bug: {e}"),
        Err(_) => {}
    }
});
