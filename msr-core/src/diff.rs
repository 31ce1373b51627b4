//! What changes between two policies: the review an operator reads before a live replacement.

use crate::policy::PolicyView;
use crate::{AccessType, Action};

/// A run of MSRs whose decision for one access type changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// First MSR of the run.
    pub first: u32,
    /// Last MSR of the run (inclusive).
    pub last: u32,
    /// The access type.
    pub access: AccessType,
    /// The decision under the old policy.
    pub before: Action,
    /// The decision under the new policy.
    pub after: Action,
}

/// The changes from `old` to `new`: maximal runs of MSRs whose decision differs, reads first,
/// then writes, each in MSR order. Allocation-free.
///
/// ```
/// use msr_filter_core::{diff, AccessType, Action, Policy};
///
/// let old: Policy<4> = Policy::parse("default allow\ndeny rw 0x10-0x1f").unwrap();
/// let new: Policy<4> = Policy::parse("default allow\ndeny rw 0x10-0x17\ndeny w 0x40").unwrap();
/// let changes: Vec<_> = diff(old.view(), new.view()).collect();
/// assert_eq!(changes.len(), 3);
/// assert_eq!((changes[0].first, changes[0].last, changes[0].after), (0x18, 0x1f, Action::Allow));
/// assert_eq!((changes[2].first, changes[2].access, changes[2].after), (0x40, AccessType::Write, Action::Deny));
/// ```
pub fn diff<'a>(old: PolicyView<'a>, new: PolicyView<'a>) -> Diff<'a> {
    Diff {
        old,
        new,
        access: 0,
        cursor: 0,
    }
}

/// The iterator of [`diff`].
#[derive(Clone, Debug)]
pub struct Diff<'a> {
    old: PolicyView<'a>,
    new: PolicyView<'a>,
    /// Index into [`AccessType::ALL`].
    access: usize,
    /// The next MSR to look at (u64: may reach 2^32).
    cursor: u64,
}

impl Diff<'_> {
    /// The first boundary after `x` where either policy's decisions may change.
    fn next_boundary(&self, x: u64) -> u64 {
        self.old.next_boundary(x).min(self.new.next_boundary(x))
    }

    fn decisions(&self, x: u64, access: AccessType) -> (Action, Action) {
        let index = x as u32;
        (
            self.old.decide(index, access),
            self.new.decide(index, access),
        )
    }
}

impl Iterator for Diff<'_> {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        while self.access < AccessType::ALL.len() {
            let access = AccessType::ALL[self.access];
            while self.cursor < 1 << 32 {
                let start = self.cursor;
                let (before, after) = self.decisions(start, access);
                let mut end = self.next_boundary(start);
                if before == after {
                    self.cursor = end;
                    continue;
                }
                while end < 1 << 32 && self.decisions(end, access) == (before, after) {
                    end = self.next_boundary(end);
                }
                self.cursor = end;
                return Some(Change {
                    first: start as u32,
                    last: (end - 1) as u32,
                    access,
                    before,
                    after,
                });
            }
            self.access += 1;
            self.cursor = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, Policy, Rule};
    use proptest::prelude::*;

    fn policy() -> impl Strategy<Value = Policy<6>> {
        let rule =
            (0u32..0x1000, 0u32..0x300, 1u32..=3, any::<bool>()).prop_map(|(a, len, acc, deny)| {
                Rule::new(
                    a,
                    a + len,
                    Access::from_bits_truncate(acc),
                    if deny { Action::Deny } else { Action::Allow },
                )
            });
        (any::<bool>(), proptest::collection::vec(rule, 0..6)).prop_map(|(deny, rules)| {
            let mut p = Policy::new(if deny { Action::Deny } else { Action::Allow });
            for r in rules {
                p.push(r).unwrap();
            }
            p
        })
    }

    proptest! {
        /// Every MSR below 0x1400 is reported changed exactly when the decisions differ, and
        /// runs are maximal.
        #[test]
        fn diff_is_exact_and_maximal(old in policy(), new in policy()) {
            let changes: std::vec::Vec<Change> = diff(old.view(), new.view()).collect();
            for access in AccessType::ALL {
                for i in 0..0x1400u32 {
                    let differs = old.decide(i, access) != new.decide(i, access);
                    let hit = changes.iter().find(|c| c.access == access && c.first <= i && i <= c.last);
                    prop_assert_eq!(differs, hit.is_some(), "MSR {:#x} {}", i, access);
                    if let Some(c) = hit {
                        prop_assert_eq!((c.before, c.after), (old.decide(i, access), new.decide(i, access)));
                    }
                }
            }
            for pair in changes.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if a.access == b.access && a.last.wrapping_add(1) == b.first {
                    prop_assert!((a.before, a.after) != (b.before, b.after), "not maximal: {:?} {:?}", a, b);
                }
            }
        }
    }

    #[test]
    fn identical_policies_have_no_changes_and_default_flip_is_everything() {
        let a: Policy<2> = Policy::parse("default allow\ndeny r 0x10").unwrap();
        assert_eq!(diff(a.view(), a.view()).count(), 0);
        let b: Policy<2> = Policy::parse("default deny\ndeny r 0x10").unwrap();
        let changes: std::vec::Vec<_> = diff(a.view(), b.view()).collect();
        // Reads: everything but 0x10 and x2APIC; writes: everything but x2APIC.
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.access, c.first, c.last))
                .collect::<std::vec::Vec<_>>(),
            [
                (AccessType::Read, 0, 0xf),
                (AccessType::Read, 0x11, 0x7ff),
                (AccessType::Read, 0x900, u32::MAX),
                (AccessType::Write, 0, 0x7ff),
                (AccessType::Write, 0x900, u32::MAX),
            ]
        );
    }
}
