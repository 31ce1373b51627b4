//! The policy's intent as sorted pieces, computed once in O(n log n) for n rules.
//!
//! Every rule boundary (a rule's first MSR and the one after its last) and the x2APIC edges cut
//! the MSR space into *intervals* on which every rule either covers all MSRs or none. For each
//! interval and access type we record the rule that decides it (the last one covering it):
//! rules are *painted* from the last to the first, each painting only intervals no later rule
//! painted, found with a union-find over "next unpainted interval" (path halving). That is
//! O(n log n) for the sort plus O(n α(n)) for the painting, and needs no allocation: the caller
//! lends [`scratch_len`] words.

use core::cell::Cell;

use crate::abi;
use crate::{AccessType, Action, Rule};

use super::Target;

/// The number of `u32` words of scratch [`pack_rules`](crate::pack_rules) needs for `rules`
/// rules: `8 * rules + 16`.
///
/// ```
/// assert_eq!(msr_filter_core::scratch_len(0), 16);
/// assert_eq!(msr_filter_core::scratch_len(1000), 8016);
/// ```
pub const fn scratch_len(rules: usize) -> usize {
    8 * rules + 16
}

/// The intent of a rule list, by interval. Intervals are `[starts[i], starts[i + 1])`, the last
/// one ending at 2^32.
pub(crate) struct Sweep<'a> {
    rules: &'a [Rule],
    default: Action,
    starts: &'a [u32],
    /// Per access type, per interval: the deciding rule + 1, or 0 where no rule covers it.
    deciding: [&'a [u32]; 2],
    /// The interval found last: the packer asks about consecutive MSRs, so it is usually the
    /// one asked for, or the next.
    hint: Cell<usize>,
}

impl<'a> Sweep<'a> {
    /// Sorts the boundaries of `rules` into `scratch` and paints them.
    ///
    /// # Panics
    /// If `scratch` is shorter than [`scratch_len`]`(rules.len())`, or there are 2^31 rules or
    /// more.
    pub(crate) fn new(default: Action, rules: &'a [Rule], scratch: &'a mut [u32]) -> Sweep<'a> {
        let n = rules.len();
        assert!(
            scratch.len() >= scratch_len(n),
            "pack_rules: the scratch holds {} words, but {} rules need scratch_len({n}) = {}",
            scratch.len(),
            n,
            scratch_len(n)
        );
        assert!(n < (1 << 31), "pack_rules: too many rules");
        let cap = 2 * n + 3;
        let (coords, rest) = scratch.split_at_mut(cap);
        let (parent, rest) = rest.split_at_mut(cap + 1);
        let (read, rest) = rest.split_at_mut(cap);
        let write = &mut rest[..cap];
        let mut m = 0;
        for b in [0, abi::X2APIC_FIRST, abi::X2APIC_LAST + 1] {
            coords[m] = b;
            m += 1;
        }
        for r in rules {
            coords[m] = r.first;
            m += 1;
            if let Some(after) = r.last.checked_add(1) {
                coords[m] = after;
                m += 1;
            }
        }
        coords[..m].sort_unstable();
        let mut unique = 0;
        for i in 0..m {
            if unique == 0 || coords[unique - 1] != coords[i] {
                coords[unique] = coords[i];
                unique += 1;
            }
        }
        let m = unique;
        let coords: &'a [u32] = &coords[..m];
        let interval = |x: u32| coords.partition_point(|&c| c <= x) - 1;
        for (access, out) in AccessType::ALL.into_iter().zip([&mut *read, &mut *write]) {
            for (i, p) in parent[..=m].iter_mut().enumerate() {
                *p = i as u32;
            }
            out[..m].fill(0);
            for (ri, r) in rules.iter().enumerate().rev() {
                if !r.access.includes(access) {
                    continue;
                }
                let lo = interval(r.first);
                let hi = match r.last.checked_add(1) {
                    Some(after) => interval(after),
                    None => m,
                };
                let mut i = find(parent, lo);
                while i < hi {
                    out[i] = ri as u32 + 1;
                    parent[i] = i as u32 + 1;
                    i = find(parent, i + 1);
                }
            }
        }
        Sweep {
            rules,
            default,
            starts: coords,
            deciding: [&read[..m], &write[..m]],
            hint: Cell::new(0),
        }
    }

    /// The interval holding `index` (`starts[i] <= index < starts[i + 1]`).
    fn interval(&self, index: u32) -> usize {
        let within = |i: usize| {
            self.starts.get(i).is_some_and(|&c| c <= index)
                && self.starts.get(i + 1).is_none_or(|&c| index < c)
        };
        let hint = self.hint.get();
        let i = if within(hint) {
            hint
        } else if within(hint + 1) {
            hint + 1
        } else {
            self.starts.partition_point(|&c| c <= index) - 1
        };
        self.hint.set(i);
        i
    }

    /// The policy's decision (allow for x2APIC MSRs).
    pub(crate) fn decide(&self, index: u32, access: AccessType) -> Action {
        if abi::is_x2apic(index) {
            return Action::Allow;
        }
        match self.rule(index, access) {
            Some(rule) => self.rules[rule].action,
            None => self.default,
        }
    }
}

/// The root of `i` in the "next unpainted interval" forest, halving the path on the way.
fn find(parent: &mut [u32], mut i: usize) -> usize {
    while parent[i] as usize != i {
        let grand = parent[parent[i] as usize];
        parent[i] = grand;
        i = grand as usize;
    }
    i
}

impl Target for Sweep<'_> {
    /// MSR 0xffffffff is left out: no range can cover it.
    fn end(&self) -> u64 {
        u64::from(u32::MAX)
    }

    fn next_boundary(&self, x: u64) -> u64 {
        let Ok(index) = u32::try_from(x) else {
            return 1 << 32;
        };
        self.starts
            .get(self.interval(index) + 1)
            .map_or(1 << 32, |&c| u64::from(c))
            .min(self.end())
    }

    fn intent(&self, index: u32, access: AccessType) -> Option<Action> {
        if abi::is_x2apic(index) {
            None
        } else {
            Some(self.decide(index, access))
        }
    }

    fn piece(&self, index: u32) -> ([Option<Action>; 2], u64) {
        let i = self.interval(index);
        let next = self
            .starts
            .get(i + 1)
            .map_or(1 << 32, |&c| u64::from(c))
            .min(self.end());
        if abi::is_x2apic(index) {
            return ([None; 2], next);
        }
        let intent = |t: usize| match self.deciding[t][i].checked_sub(1) {
            Some(rule) => Some(self.rules[rule as usize].action),
            None => Some(self.default),
        };
        ([intent(0), intent(1)], next)
    }

    fn rule(&self, index: u32, access: AccessType) -> Option<usize> {
        if abi::is_x2apic(index) {
            return None;
        }
        let r = self.deciding[access as usize][self.interval(index)];
        r.checked_sub(1).map(|r| r as usize)
    }
}
