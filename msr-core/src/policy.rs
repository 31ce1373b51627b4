//! Policies: what the user wants, in the user's terms.

use core::fmt;

use crate::abi;
use crate::{Access, AccessType, Action};

/// One policy rule: `action` for the `access` types over the inclusive MSR range `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// First MSR index covered.
    pub first: u32,
    /// Last MSR index covered (inclusive).
    pub last: u32,
    /// The access types the rule speaks for.
    pub access: Access,
    /// What the rule wants for them.
    pub action: Action,
}

impl Rule {
    /// A rule over `first..=last`.
    pub const fn new(first: u32, last: u32, access: Access, action: Action) -> Rule {
        Rule {
            first,
            last,
            access,
            action,
        }
    }

    /// A rule over one MSR.
    pub const fn single(index: u32, access: Access, action: Action) -> Rule {
        Rule::new(index, index, access, action)
    }

    /// Checks that the rule covers some access and that `first <= last`; `position` is its
    /// place in a policy, for the error.
    pub const fn check(&self, position: usize) -> Result<(), PolicyError> {
        if self.access.is_empty() {
            return Err(PolicyError::NoAccess { rule: position });
        }
        if self.first > self.last {
            return Err(PolicyError::Reversed {
                rule: position,
                first: self.first,
                last: self.last,
            });
        }
        Ok(())
    }

    /// Whether the rule speaks for `index` and `access`.
    pub const fn covers(&self, index: u32, access: AccessType) -> bool {
        self.first <= index && index <= self.last && self.access.includes(access)
    }
}

impl fmt::Display for Rule {
    /// Prints the rule as a policy-text line: `deny rw 0x10-0x1f`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:#x}", self.action, self.access, self.first)?;
        if self.last != self.first {
            write!(f, "-{:#x}", self.last)?;
        }
        Ok(())
    }
}

/// Why a rule cannot join a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The rule covers no access type.
    NoAccess {
        /// The rule's position in the policy (0-based).
        rule: usize,
    },
    /// `first > last`.
    Reversed {
        /// The rule's position in the policy (0-based).
        rule: usize,
        /// The rule's first MSR.
        first: u32,
        /// The rule's last MSR.
        last: u32,
    },
    /// The policy already holds its capacity of rules.
    Full {
        /// The capacity (the `N` of `Policy<N>`).
        capacity: usize,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PolicyError::NoAccess { rule } => {
                write!(f, "rule {rule} covers neither reads nor writes")
            }
            PolicyError::Reversed { rule, first, last } => write!(
                f,
                "rule {rule} starts at {first:#x}, after its last MSR {last:#x}"
            ),
            PolicyError::Full { capacity } => {
                write!(f, "the policy is full: it holds at most {capacity} rules")
            }
        }
    }
}

impl core::error::Error for PolicyError {}

/// A default action plus up to `N` rules; **later rules override earlier ones**, as in a
/// firewall-style list read top to bottom where the last word counts, so a broad rule followed
/// by narrow exceptions reads naturally:
///
/// ```
/// use msr_filter_core::{Access, AccessType, Action, Policy, Rule};
///
/// let mut policy = Policy::<8>::new(Action::Allow);
/// policy.push(Rule::new(0x4000_0000, 0x4000_00ff, Access::READ_WRITE, Action::Deny)).unwrap();
/// policy.push(Rule::single(0x4000_0001, Access::READ, Action::Allow)).unwrap();
/// assert_eq!(policy.decide(0x4000_0001, AccessType::Read), Action::Allow);
/// assert_eq!(policy.decide(0x4000_0001, AccessType::Write), Action::Deny);
/// assert_eq!(policy.decide(0x10, AccessType::Write), Action::Allow);
/// ```
///
/// The default applies to every MSR no rule covers, **except x2APIC MSRs 0x800..=0x8ff**: the
/// kernel never filters those, so a policy's intent for them is always allow, and a rule that
/// denies them cannot be packed ([`PackError::DeniesX2apic`](crate::PackError::DeniesX2apic)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy<const N: usize> {
    default: Action,
    rules: heapless::Vec<Rule, N>,
}

impl<const N: usize> Policy<N> {
    /// An empty policy with the given default action.
    pub const fn new(default: Action) -> Self {
        Policy {
            default,
            rules: heapless::Vec::new(),
        }
    }

    /// The default action.
    pub const fn default_action(&self) -> Action {
        self.default
    }

    /// Changes the default action.
    pub fn set_default_action(&mut self, default: Action) {
        self.default = default;
    }

    /// The rules, in order (later ones override earlier ones).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Appends a rule, which overrides every earlier rule where they overlap.
    pub fn push(&mut self, rule: Rule) -> Result<(), PolicyError> {
        rule.check(self.rules.len())?;
        self.rules
            .push(rule)
            .map_err(|_| PolicyError::Full { capacity: N })
    }

    /// The policy as a [`PolicyView`], which every function over policies takes.
    pub fn view(&self) -> PolicyView<'_> {
        PolicyView {
            default: self.default,
            rules: &self.rules,
        }
    }

    /// The rule that decides `index` for `access`: see [`PolicyView::deciding_rule`].
    pub fn deciding_rule(&self, index: u32, access: AccessType) -> Option<usize> {
        self.view().deciding_rule(index, access)
    }

    /// What the policy wants for `index` and `access`: see [`PolicyView::decide`].
    pub fn decide(&self, index: u32, access: AccessType) -> Action {
        self.view().decide(index, access)
    }
}

impl<'a, const N: usize> From<&'a Policy<N>> for PolicyView<'a> {
    fn from(policy: &'a Policy<N>) -> PolicyView<'a> {
        policy.view()
    }
}

/// The maximal runs of consecutive MSRs in `sorted` (ascending, each once), as inclusive
/// `(first, last)` pairs: how an allow-list of single MSRs becomes few rules.
///
/// ```
/// let runs: Vec<_> = msr_filter_core::runs(&[0x10, 0x174, 0x175, 0x176, 0xc000_0080]).collect();
/// assert_eq!(runs, [(0x10, 0x10), (0x174, 0x176), (0xc000_0080, 0xc000_0080)]);
/// ```
pub fn runs(sorted: &[u32]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut rest = sorted;
    core::iter::from_fn(move || {
        let (&first, tail) = rest.split_first()?;
        let mut last = first;
        let mut taken = 0;
        for &next in tail {
            if Some(next) != last.checked_add(1) {
                break;
            }
            last = next;
            taken += 1;
        }
        rest = &tail[taken..];
        Some((first, last))
    })
}

/// A policy whose rules live elsewhere: a default action and a borrowed slice of rules, of any
/// length. What a [`Policy<N>`] is without its capacity, as heapless's `VecView` is to its
/// `Vec`; a host that allocates keeps its rules in a `Vec<Rule>` and borrows them here, so no
/// fixed capacity limits it.
///
/// ```
/// use msr_filter_core::{Access, AccessType, Action, PolicyView, Rule};
///
/// let rules: Vec<Rule> = (0..1000u32)
///     .map(|i| Rule::single(0x4000_0000 + 2 * i, Access::WRITE, Action::Deny))
///     .collect();
/// let view = PolicyView::new(Action::Allow, &rules).unwrap();
/// assert_eq!(view.decide(0x4000_0002, AccessType::Write), Action::Deny);
/// assert_eq!(view.decide(0x4000_0003, AccessType::Write), Action::Allow);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyView<'a> {
    default: Action,
    rules: &'a [Rule],
}

impl<'a> PolicyView<'a> {
    /// A view of `rules` (later ones override earlier ones) with a default action; each rule
    /// is checked as [`Policy::push`] checks it.
    pub fn new(default: Action, rules: &'a [Rule]) -> Result<PolicyView<'a>, PolicyError> {
        for (position, rule) in rules.iter().enumerate() {
            rule.check(position)?;
        }
        Ok(PolicyView { default, rules })
    }

    /// The default action.
    pub const fn default_action(&self) -> Action {
        self.default
    }

    /// The rules, in order (later rules override earlier ones).
    pub const fn rules(&self) -> &'a [Rule] {
        self.rules
    }

    /// The rule that decides `index` for `access`: the last one covering it (none for x2APIC
    /// MSRs, which only the kernel decides, nor where the default applies).
    pub fn deciding_rule(&self, index: u32, access: AccessType) -> Option<usize> {
        if abi::is_x2apic(index) {
            return None;
        }
        self.rules.iter().rposition(|r| r.covers(index, access))
    }

    /// The first MSR after `x` (as a u64: 2^32 at the end) where the policy's decisions may
    /// change: a rule's first MSR or the one after its last, or an edge of the x2APIC MSRs.
    pub(crate) fn next_boundary(&self, x: u64) -> u64 {
        let x2apic = [
            u64::from(abi::X2APIC_FIRST),
            u64::from(abi::X2APIC_LAST) + 1,
        ];
        self.rules
            .iter()
            .flat_map(|r| [u64::from(r.first), u64::from(r.last) + 1])
            .chain(x2apic)
            .filter(|&b| b > x)
            .min()
            .unwrap_or(1 << 32)
    }

    /// What the policy wants for `index` and `access`: allow for x2APIC MSRs, else the last rule
    /// covering it, else the default action.
    pub fn decide(&self, index: u32, access: AccessType) -> Action {
        if abi::is_x2apic(index) {
            return Action::Allow;
        }
        match self.deciding_rule(index, access) {
            Some(rule) => self.rules[rule].action,
            None => self.default,
        }
    }
}

impl fmt::Display for PolicyView<'_> {
    /// Prints the policy as text that [`Policy::parse`] reads back to an equal policy; rules over
    /// a single well-known MSR carry its name in a comment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "default {}", self.default)?;
        for rule in self.rules {
            write!(f, "{rule}")?;
            if rule.first == rule.last {
                if let Some(name) = crate::names::name_of(rule.first) {
                    write!(f, "  # {name}")?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Policy<N> {
    /// Prints the policy as text that [`Policy::parse`] reads back to an equal policy; rules over
    /// a single well-known MSR carry its name in a comment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_checks_each_rule_and_names_its_position() {
        let rules = [
            Rule::single(0x10, Access::READ, Action::Deny),
            Rule::new(0x20, 0x1f, Access::WRITE, Action::Deny),
        ];
        assert_eq!(
            PolicyView::new(Action::Allow, &rules),
            Err(PolicyError::Reversed {
                rule: 1,
                first: 0x20,
                last: 0x1f
            })
        );
        let rules = [Rule::single(0x10, Access::empty(), Action::Deny)];
        assert_eq!(
            PolicyView::new(Action::Allow, &rules),
            Err(PolicyError::NoAccess { rule: 0 })
        );
    }

    #[test]
    fn a_view_decides_as_the_policy_it_borrows() {
        let mut policy = Policy::<4>::new(Action::Deny);
        policy
            .push(Rule::new(0x10, 0x1f, Access::READ_WRITE, Action::Allow))
            .unwrap();
        policy
            .push(Rule::single(0x18, Access::WRITE, Action::Deny))
            .unwrap();
        let view = PolicyView::new(Action::Deny, policy.rules()).unwrap();
        assert_eq!(view, policy.view());
        for index in [0x0f, 0x10, 0x18, 0x1f, 0x20, 0x800, u32::MAX] {
            for access in AccessType::ALL {
                assert_eq!(view.decide(index, access), policy.decide(index, access));
            }
        }
        assert_eq!(std::format!("{view}"), std::format!("{policy}"));
    }
}
