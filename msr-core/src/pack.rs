//! Packing a policy into the kernel's 16 ranges.
//!
//! # The model
//! Fix the filter's default action `D`. An MSR *needs* a range for an access type where the
//! policy's intent differs from `D`; x2APIC MSRs need nothing (the kernel allows them whatever
//! the filter says). Each MSR falls in one class: nothing needed, reads only (`R`), writes only
//! (`W`), or both (`B`, which then want the same action).
//!
//! A packed filter has three families of ranges: READ-only, WRITE-only and READ|WRITE, the single
//! ones in slots before the READ|WRITE ones. Within a family ranges never overlap (an overlap is
//! never needed: bitmaps are free). An MSR of class `c` is then served correctly exactly when it
//! is covered by the family matching `c` (READ for `R`, WRITE for `W`, READ|WRITE for `B`) or by
//! at least two families: with READ and WRITE both present each access has its own range; with a
//! single range and READ|WRITE, the single range serves its access and the READ|WRITE range's bit
//! serves the other one. Bitmaps then follow from the intent.
//!
//! # The search
//! [`pack_rules`] first sorts the rules' boundaries and paints, for every interval between them,
//! the rule deciding each access (`sweep`, O(n log n)). The search (`solve`) then works on
//! *runs* (a family's maximal covered stretches, whose cost depends on their length only, so
//! the 0x3000-MSR limit needs no search) over *clusters* of needed MSRs, with a dynamic program
//! over the points where the set of covering families may change; `solve`'s docs prove which
//! points suffice and when a state can be dropped. The cost is (ranges, bitmap bytes), compared
//! in that order. Both default actions are tried; a default whose proven lower bound (a range
//! covers at most 0x3000 MSRs) exceeds 64 ranges is not searched.
//!
//! The search allocates nothing: its states live on the stack (about 64 KiB, two layers of
//! [`solve::MAX_STATES`] states and the ranges they closed); the filter (about 45 KiB) is built
//! after the search returns, in a frame of its own. When a layer of a cluster overflows
//! (clusters much wider than one range with dense, mixed rules can), the cluster is searched
//! again dropping the states a proven bound shows need more ranges than a lower bound, then
//! than a packing found (a frame of its own too, about 16 KiB for the bound's tables); the
//! result is minimal unless those searches overflow as well or a cluster spends its budget of
//! change points. Then the filter is still exact but [`Packed::proven_minimal`] is false (lower
//! bounds of such a cluster, a relaxation and one that keeps each run's rounding to whole
//! ranges, see `solve`'s docs, may still prove the
//! number of ranges minimal, which a [`PackError::TooManyRanges`] reports as
//! [`Needed::Exact`]). Each range is then shrunk to the MSRs where it is needed (the tightest of equally cheap filters), a READ|WRITE range whose
//! reads (or writes) single ranges already decide is narrowed, so that packed filters carry no
//! [lint](Filter::lints), and the filter is checked against the rules at every boundary before
//! it is returned.

use core::fmt;

use crate::abi::{self, MAX_NMSRS, MAX_RANGES};
use crate::policy::{Policy, PolicyView};
use crate::{Access, AccessType, Action, Filter, Rule};

mod phase;
#[cfg(test)]
#[path = "../tests/shapes/mod.rs"]
mod shapes;
mod solve;
mod sweep;

use solve::solve;
pub use sweep::scratch_len;
use sweep::Sweep;

/// A policy packed into a filter.
#[derive(Clone, Debug)]
pub struct Packed {
    /// The filter: for every MSR and access, it decides as the policy says.
    pub filter: Filter,
    /// Whether the search proved the filter minimal (fewest ranges, then fewest bitmap bytes).
    /// False only when the policy is complex enough to hit a bound of the search.
    pub proven_minimal: bool,
}

/// Rule positions named in a [`PackError::TooManyRanges`].
pub type RuleList = heapless::Vec<u16, 16>;

/// Why a policy cannot be packed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackError {
    /// A rule denies an x2APIC MSR (0x800..=0x8ff); the kernel never filters those, so no filter
    /// can do what the policy asks.
    DeniesX2apic {
        /// The rule's position in the policy (0-based).
        rule: usize,
        /// The first x2APIC MSR it denies.
        index: u32,
        /// The access it denies.
        access: AccessType,
    },
    /// The policy wants different actions for reads and writes of MSR 0xffffffff. No kernel range
    /// can cover that MSR (`base + nmsrs` would be 2^32, which wraps to 0 in the kernel's 32-bit
    /// arithmetic and matches nothing), so only the default action decides it, for both.
    LastMsrSplit {
        /// The rule deciding reads of it, if any (else the default does).
        read_rule: Option<usize>,
        /// The rule deciding writes of it, if any (else the default does).
        write_rule: Option<usize>,
    },
    /// A bug in the packer: the filter it built would decide `index` differently from the
    /// policy. Never returned knowingly; please report it with the policy.
    Internal {
        /// The first MSR found decided differently.
        index: u32,
        /// The access.
        access: AccessType,
    },
    /// The policy needs more ranges than the kernel's 16.
    TooManyRanges {
        /// Ranges the policy needs; [`bound`](PackError::TooManyRanges::bound) says whether
        /// this is the exact minimum, a proven lower bound, or the best packing found.
        needed: usize,
        /// What `needed` is.
        bound: Needed,
        /// The rules (positions, first 16) that need ranges: those that decide some MSR
        /// differently from the filter's default action.
        rules: RuleList,
        /// How many more of the policy's rules want the other action than the filter's
        /// default (rules `rules` leaves out when it is full; some may decide nothing).
        more: usize,
        /// Whether the policy's own default action needs ranges too (the filter's default
        /// action had to be the other one).
        default_needs_ranges: bool,
        /// The rule that forced the filter's default action away from the policy's: it decides
        /// MSR 0xffffffff, which only the default action can decide.
        default_forced_by: Option<usize>,
    },
}

/// What [`PackError::TooManyRanges::needed`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// The proven minimum number of ranges.
    Exact,
    /// A proven lower bound: the policy needs at least this many ranges. The search was not
    /// run (the bound alone shows the policy cannot fit), or hit a bound and found a packing
    /// with more.
    AtLeast,
    /// The ranges of the best packing found, more than 16; the search hit a bound, so it is
    /// not proven that the policy cannot fit.
    Estimate,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::DeniesX2apic {
                rule,
                index,
                access,
            } => write!(
                f,
                "rule {rule} denies {access} access to x2APIC MSR {index:#x}, but the kernel never filters x2APIC MSRs {:#x}-{:#x}",
                abi::X2APIC_FIRST,
                abi::X2APIC_LAST
            ),
            PackError::LastMsrSplit {
                read_rule,
                write_rule,
            } => {
                let name = |r: &Option<usize>| match r {
                    Some(r) => RuleName::Rule(*r),
                    None => RuleName::Default,
                };
                write!(
                    f,
                    "reads of MSR 0xffffffff are decided by {} and writes by {}, differently; no kernel range can cover that MSR (base + nmsrs would wrap to 0), so only the default action decides it, for both",
                    name(read_rule),
                    name(write_rule)
                )
            }
            PackError::Internal { index, access } => write!(
                f,
                "internal error: the packed filter would decide {access} access to MSR {index:#x} differently from the policy; please report this policy"
            ),
            PackError::TooManyRanges {
                needed,
                bound,
                rules,
                more,
                default_needs_ranges,
                default_forced_by,
            } => {
                match bound {
                    Needed::Exact => write!(
                        f,
                        "the policy needs {needed} kernel ranges, more than the {MAX_RANGES} a filter holds"
                    )?,
                    Needed::AtLeast => write!(
                        f,
                        "the policy needs at least {needed} kernel ranges, more than the {MAX_RANGES} a filter holds"
                    )?,
                    Needed::Estimate => write!(
                        f,
                        "the best packing found needs {needed} kernel ranges, more than the {MAX_RANGES} a filter holds (an estimate: the search hit a bound, so fewer may suffice)"
                    )?,
                }
                write!(f, "; ranges are needed by")?;
                let mut sep = " ";
                if !rules.is_empty() {
                    write!(f, " rules")?;
                    for rule in rules.iter() {
                        write!(f, "{sep}{rule}")?;
                        sep = ", ";
                    }
                    if *more > 0 {
                        let (noun, verb) = if *more == 1 {
                            ("rule", "wants")
                        } else {
                            ("rules", "want")
                        };
                        write!(
                            f,
                            " (the first {}; {more} more {noun} {verb} the other action than the filter's default)",
                            rules.len()
                        )?;
                    }
                    sep = " and ";
                }
                if *default_needs_ranges {
                    write!(f, "{sep}the policy's default action")?;
                }
                if let Some(rule) = default_forced_by {
                    write!(
                        f,
                        " (the filter cannot take the policy's default action because rule {rule} decides MSR 0xffffffff, which no range can cover)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl core::error::Error for PackError {}

enum RuleName {
    Rule(usize),
    Default,
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleName::Rule(r) => write!(f, "rule {r}"),
            RuleName::Default => f.write_str("the default action"),
        }
    }
}

/// Rules held on the stack by [`Policy::pack`]; longer policies use a slower scan of the rules
/// instead of the sorted sweep (call [`pack_rules`] with a scratch for those).
const STACK_RULES: usize = 256;

impl<const N: usize> Policy<N> {
    /// Packs the policy: see [`PolicyView::pack`].
    pub fn pack(&self) -> Result<Packed, PackError> {
        self.view().pack()
    }
}

impl PolicyView<'_> {
    /// Packs the policy into the fewest kernel ranges, then the fewest bitmap bytes, such that
    /// the filter decides every MSR and access as the policy does: [`pack_rules`] over the
    /// policy's rules, with a scratch on the stack (8 KiB) for up to 256 rules. Longer policies
    /// are packed with the same search over a plain scan of the rules, which takes time
    /// quadratic in their number: a host that can allocate calls
    /// [`pack_with`](Self::pack_with) with a scratch for those.
    ///
    /// ```
    /// use msr_filter_core::{AccessType, Action, Policy};
    ///
    /// // Different read and write policies over the same MSRs need separate ranges.
    /// let policy: Policy<8> = Policy::parse(
    ///     "default deny\nallow rw 0xc0000080-0xc0000084\ndeny w 0xc0000082\n",
    /// ).unwrap();
    /// let packed = policy.pack().unwrap();
    /// assert_eq!(packed.filter.range_count(), 2);
    /// assert_eq!(packed.filter.decide(0xc0000082, AccessType::Read), Action::Allow);
    /// assert_eq!(packed.filter.decide(0xc0000082, AccessType::Write), Action::Deny);
    /// ```
    pub fn pack(&self) -> Result<Packed, PackError> {
        if self.rules().len() <= STACK_RULES {
            let mut scratch = [0u32; scratch_len(STACK_RULES)];
            pack_rules(self.default_action(), self.rules(), &mut scratch)
        } else {
            pack_target(self.default_action(), self.rules(), &PolicyTarget(*self))
        }
    }

    /// Packs as [`pack`](Self::pack) does, in time O(n log n) whatever the number of rules,
    /// with `scratch` of at least [`scratch_len`]`(rules)` words as working memory (see
    /// [`pack_rules`]).
    ///
    /// # Panics
    /// If `scratch` is shorter than [`scratch_len`]`(self.rules().len())`.
    pub fn pack_with(&self, scratch: &mut [u32]) -> Result<Packed, PackError> {
        pack_rules(self.default_action(), self.rules(), scratch)
    }
}

/// Packs a default action and a list of rules (later rules override earlier ones, as in
/// [`Policy`]) into the fewest kernel ranges, then the fewest bitmap bytes, such that the
/// filter decides every MSR and access as the rules do.
///
/// `scratch` is working memory of at least [`scratch_len`]`(rules.len())` words (`8 n + 16`);
/// its contents on entry do not matter and on return are unspecified. Nothing is allocated:
/// a `no_std` caller lends a buffer, a std host can pass `&mut vec![0; scratch_len(n)]`.
/// Time is O(n log n) for the sort of the rule boundaries plus the search, which is linear in
/// the number of boundaries; the search keeps its states on the stack (about 64 KiB).
///
/// Rule semantics: the last rule covering an MSR and access decides it, else `default`; x2APIC
/// MSRs 0x800..=0x8ff are always allowed (a rule denying them is an error), and MSR 0xffffffff
/// can only be decided by the filter's default action.
///
/// # Panics
/// If `scratch` is shorter than [`scratch_len`]`(rules.len())`.
///
/// ```
/// use msr_filter_core::{pack_rules, scratch_len, Access, AccessType, Action, Rule};
///
/// let rules = [
///     Rule::new(0x4000_0000, 0x4000_00ff, Access::READ_WRITE, Action::Deny),
///     Rule::single(0x4000_0001, Access::READ, Action::Allow),
/// ];
/// // A std host may allocate the scratch: `vec![0; scratch_len(rules.len())]`.
/// let mut scratch = [0u32; scratch_len(2)];
/// let packed = pack_rules(Action::Allow, &rules, &mut scratch).unwrap();
/// assert!(packed.proven_minimal);
/// // Reads and writes of 0x4000_0001 differ, the other MSRs deny both: a READ range for the
/// // reads, a READ|WRITE range for the rest.
/// assert_eq!(packed.filter.range_count(), 2);
/// assert_eq!(packed.filter.decide(0x4000_0001, AccessType::Read), Action::Allow);
/// assert_eq!(packed.filter.decide(0x4000_0001, AccessType::Write), Action::Deny);
/// assert_eq!(packed.filter.decide(0x4000_0002, AccessType::Read), Action::Deny);
/// ```
pub fn pack_rules(
    default: Action,
    rules: &[Rule],
    scratch: &mut [u32],
) -> Result<Packed, PackError> {
    let sweep = Sweep::new(default, rules, scratch);
    pack_target(default, rules, &sweep)
}

/// What one default action gives: the search's result and what is known of its count.
struct Candidate {
    default: Action,
    solution: Solution,
}

impl Candidate {
    /// A proven lower bound on the ranges this default needs.
    fn lower(&self) -> u32 {
        if self.solution.exact {
            self.solution.cost.ranges
        } else {
            self.solution.lower
        }
    }

    /// The ranges of the best packing found, if the search ran.
    fn found(&self) -> Option<u32> {
        self.solution.searched.then_some(self.solution.cost.ranges)
    }
}

fn pack_target(default: Action, rules: &[Rule], target: &dyn Target) -> Result<Packed, PackError> {
    check_x2apic(rules, target)?;
    let want = |index: u32, access| target.intent(index, access).unwrap_or(Action::Allow);
    let mut candidates: heapless::Vec<Candidate, 2> = heapless::Vec::new();
    // The policy's own default first, so that it wins ties.
    for d in [default, default.invert()] {
        // No range can cover MSR 0xffffffff (its end, base + nmsrs, would be 2^32, which is 0
        // in the kernel's 32-bit arithmetic): only the default action decides it.
        if AccessType::ALL.iter().any(|&a| want(u32::MAX, a) != d) {
            continue;
        }
        // Past four times the kernel's ranges, only the lower bound is worth computing.
        let solution = solve(target, Geometry::KERNEL, d, 4 * MAX_RANGES as u32);
        let _ = candidates.push(Candidate {
            default: d,
            solution,
        });
    }
    if candidates.is_empty() {
        return Err(PackError::LastMsrSplit {
            read_rule: target.rule(u32::MAX, AccessType::Read),
            write_rule: target.rule(u32::MAX, AccessType::Write),
        });
    }
    let fits = |c: &&Candidate| c.found().is_some_and(|n| n as usize <= MAX_RANGES);
    let best = candidates
        .iter()
        .filter(fits)
        .min_by_key(|c| c.solution.cost);
    let Some(best) = best else {
        return Err(too_many_ranges(default, rules, target, &candidates));
    };
    let proven_minimal = candidates
        .iter()
        .all(|c| c.solution.exact || c.lower() > best.solution.cost.ranges);
    finish(best.default, &best.solution.runs, target, proven_minimal)
}

/// The packed filter of the chosen solution, checked against the policy. A frame of its own:
/// the filter (tens of KiB) and its copies live here, not beside the search's states.
#[inline(never)]
fn finish(
    default: Action,
    runs: &[Run],
    target: &dyn Target,
    proven_minimal: bool,
) -> Result<Packed, PackError> {
    let filter = build_filter(default, runs, target);
    check_packed(target, &filter)?;
    Ok(Packed {
        filter,
        proven_minimal,
    })
}

fn too_many_ranges(
    default: Action,
    rules: &[Rule],
    target: &dyn Target,
    candidates: &[Candidate],
) -> PackError {
    let lower = candidates.iter().map(Candidate::lower).min().unwrap_or(0);
    let found = candidates.iter().filter_map(Candidate::found).min();
    let (needed, bound) = match found {
        Some(n) if n == lower => (n, Needed::Exact),
        _ if lower as usize > MAX_RANGES => (lower, Needed::AtLeast),
        Some(n) => (n, Needed::Estimate),
        None => (lower, Needed::AtLeast),
    };
    // The default the error speaks of: the policy's own if it was tried.
    let used = candidates
        .iter()
        .min_by_key(|c| c.lower())
        .map_or(default, |c| c.default);
    let forced = candidates.iter().all(|c| c.default != default);
    let default_forced_by = if forced {
        AccessType::ALL
            .iter()
            .find_map(|&a| target.rule(u32::MAX, a))
    } else {
        None
    };
    let listed = rules_needing_ranges(rules, target, used);
    let more = if listed.is_full() {
        let wanting = rules.iter().filter(|r| r.action != used).count();
        wanting.saturating_sub(listed.len())
    } else {
        0
    };
    PackError::TooManyRanges {
        needed: needed as usize,
        bound,
        rules: listed,
        more,
        default_needs_ranges: used != default,
        default_forced_by,
    }
}

/// The filter of a solution: single-access ranges first (where they overlap a READ|WRITE range
/// they take their access and leave it the other), bitmaps from the intent.
fn build_filter(default: Action, found: &[Run], target: &dyn Target) -> Filter {
    // Each range shrinks to the first and last MSR where the other ranges do not serve the
    // class without it, and goes if there is none: the filter stays exact and is never dearer.
    // Of equally cheap filters this gives the tightest ranges. Ranges shrink one after the
    // other, each against the others as they are by then.
    let mut kept: heapless::Vec<Option<Run>, MAX_RANGES> = found.iter().map(|&r| Some(r)).collect();
    for i in 0..kept.len() {
        let Some(run) = kept[i] else { continue };
        let (mut lo, mut hi) = (None, 0);
        let mut x = u64::from(run.first);
        let end = u64::from(run.last) + 1;
        while x < end {
            let (intent, next) = target.piece(x as u32);
            let mut next = next.min(end);
            let mut set = 0u8;
            for (j, other) in kept.iter().enumerate() {
                let Some(other) = other.filter(|_| j != i) else {
                    continue;
                };
                for b in [u64::from(other.first), u64::from(other.last) + 1] {
                    if b > x && b < next {
                        next = b;
                    }
                }
                if u64::from(other.first) <= x && x <= u64::from(other.last) {
                    set |= 1 << other.family as u8;
                }
            }
            if !Class::of_piece(intent, default).allows(set) {
                lo.get_or_insert(x as u32);
                hi = (next - 1) as u32;
            }
            x = next;
        }
        let left = kept.iter().flatten().count();
        kept[i] = match lo {
            Some(lo) => Some(Run {
                first: lo,
                last: hi,
                ..run
            }),
            // The harmless range a DEFAULT_DENY filter needs (the kernel refuses it without).
            None if left == 1 && default == Action::Deny => Some(run),
            None => None,
        };
    }
    let mut runs: heapless::Vec<Run, MAX_RANGES> = kept.iter().flatten().copied().collect();
    runs.sort_unstable_by_key(|r| r.first);
    // A READ|WRITE range whose reads (writes) single ranges and the x2APIC MSRs decide
    // entirely would be linted as never deciding them: it becomes a WRITE (READ) range, after
    // the original single ranges, and is dropped if it decides nothing at all (the search never
    // gives such a range, but the filter must carry no lint whatever the search did).
    let mut converted: heapless::Vec<Run, MAX_RANGES> = heapless::Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let run = runs[i];
        if run.family != Family::Both {
            i += 1;
            continue;
        }
        let covered_by = |family: Family| {
            covered(
                runs.iter()
                    .filter(|r| r.family == family)
                    .map(|r| (r.first, r.last)),
                run.first,
                run.last,
            )
        };
        let (read_covered, write_covered) = (covered_by(Family::Read), covered_by(Family::Write));
        if read_covered || write_covered {
            runs.remove(i);
            if !(read_covered && write_covered) {
                let family = if read_covered {
                    Family::Write
                } else {
                    Family::Read
                };
                let _ = converted.push(Run { family, ..run });
            }
        } else {
            i += 1;
        }
    }
    let mut ordered: heapless::Vec<Run, MAX_RANGES> = heapless::Vec::new();
    for run in runs.iter().filter(|r| r.family != Family::Both) {
        let _ = ordered.push(*run);
    }
    for run in converted.iter() {
        let _ = ordered.push(*run);
    }
    for run in runs.iter().filter(|r| r.family == Family::Both) {
        let _ = ordered.push(*run);
    }
    let parts: heapless::Vec<(Access, u32, u32), MAX_RANGES> = ordered
        .iter()
        .map(|r| (r.family.flags(), r.first, r.last - r.first + 1))
        .collect();
    // The action is constant between policy boundaries and range boundaries.
    let segment = |slot: usize, index: u32| -> (Action, u32) {
        let (intent, next) = target.piece(index);
        let [read, write] = intent.map(|a| a.unwrap_or(Action::Allow));
        let action = match ordered[slot].family.flags() {
            Access::READ => read,
            Access::WRITE => write,
            // A READ|WRITE range serves the access no single range before it takes.
            _ => {
                let read_taken = ordered[..slot].iter().any(|r| {
                    r.family.flags() == Access::READ && r.first <= index && index <= r.last
                });
                if read_taken {
                    write
                } else {
                    read
                }
            }
        };
        let at = u64::from(index);
        let mut end = next;
        for r in ordered.iter() {
            for b in [u64::from(r.first), u64::from(r.last) + 1] {
                if b > at && b < end {
                    end = b;
                }
            }
        }
        (action, u32::try_from(end - at).unwrap_or(u32::MAX))
    };
    Filter::from_packed(default, &parts, &segment)
}

/// Whether the inclusive spans (and the x2APIC MSRs) cover `first..=last`.
fn covered(spans: impl Iterator<Item = (u32, u32)> + Clone, first: u32, last: u32) -> bool {
    let x2apic = (abi::X2APIC_FIRST, abi::X2APIC_LAST);
    let mut reached = u64::from(first); // everything before it is covered
    loop {
        let Some(end) = spans
            .clone()
            .chain([x2apic])
            .filter(|&(a, b)| u64::from(a) <= reached && u64::from(b) >= reached)
            .map(|(_, b)| u64::from(b) + 1)
            .max()
        else {
            return false;
        };
        if end > u64::from(last) {
            return true;
        }
        reached = end;
    }
}

/// Checks the packed filter against the intent on both sides of every policy and range
/// boundary (where a wrong filter would first differ: bitmaps are built constant between
/// them), so that a packer bug is an error, never a silently wrong filter. O(boundaries ×
/// log rules) with a sorted target.
fn check_packed(target: &dyn Target, filter: &Filter) -> Result<(), PackError> {
    let check = |at: u64| -> Result<(), PackError> {
        for index in [at, at.saturating_sub(1)] {
            let index = index.min(u64::from(u32::MAX)) as u32;
            let (intent, _) = target.piece(index);
            for (access, want) in AccessType::ALL.into_iter().zip(intent) {
                if filter.decide(index, access) != want.unwrap_or(Action::Allow) {
                    return Err(PackError::Internal { index, access });
                }
            }
        }
        Ok(())
    };
    for (_, r) in filter.used_ranges() {
        check(u64::from(r.base()))?;
        check(u64::from(r.base()) + u64::from(r.nmsrs()))?;
    }
    let mut at = 0u64;
    loop {
        check(at)?;
        if at > u64::from(u32::MAX) {
            return Ok(());
        }
        at = if at == target.end() {
            at + 1
        } else {
            target.next_boundary(at)
        };
    }
}

/// A rule that denies an x2APIC MSR (the last rule covering it for the access is a deny).
fn check_x2apic(rules: &[Rule], target: &dyn Target) -> Result<(), PackError> {
    let mut index = abi::X2APIC_FIRST;
    loop {
        for access in AccessType::ALL {
            if let Some(rule) = rules.iter().rposition(|r| r.covers(index, access)) {
                if rules[rule].action == Action::Deny {
                    return Err(PackError::DeniesX2apic {
                        rule,
                        index,
                        access,
                    });
                }
            }
        }
        // The rules decide alike up to the next boundary.
        let next = target.next_boundary(u64::from(index));
        if next > u64::from(abi::X2APIC_LAST) {
            return Ok(());
        }
        index = next as u32;
    }
}

fn rules_needing_ranges(rules: &[Rule], target: &dyn Target, default: Action) -> RuleList {
    let mut list = RuleList::new();
    let mut start = 0u64;
    while start < target.end() {
        let index = start as u32;
        for access in AccessType::ALL {
            if let Some(rule) = target.rule(index, access) {
                let rule16 = u16::try_from(rule).unwrap_or(u16::MAX);
                if rules[rule].action != default
                    && !list.contains(&rule16)
                    && list.push(rule16).is_err()
                {
                    list.sort_unstable();
                    return list;
                }
            }
        }
        start = target.next_boundary(start);
    }
    list.sort_unstable();
    list
}

/// The sizes the search works with: the kernel's, or small ones in the exhaustive tests.
///
/// The exact search assumes a range holds a whole number of words (`max_nmsrs` a multiple of
/// `word_bits`, as 0x3000 is of 64) or that no run is as long as a range: only then does
/// cutting a run every `max_nmsrs` MSRs reach the fewest ranges and the fewest words at once
/// (a debug assertion in `Cluster::finish` checks it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// The most MSRs in one range.
    pub max_nmsrs: u32,
    /// MSRs per bitmap word.
    pub word_bits: u32,
    /// Bytes per bitmap word.
    pub word_bytes: u32,
}

impl Geometry {
    pub const KERNEL: Geometry = Geometry {
        max_nmsrs: MAX_NMSRS,
        word_bits: 64,
        word_bytes: 8,
    };

    fn bytes(&self, len: u64) -> u32 {
        (len.div_ceil(u64::from(self.word_bits)) * u64::from(self.word_bytes)) as u32
    }
}

/// What the packer packs: a piecewise-constant intent over `[0, end)`.
pub(crate) trait Target {
    /// One past the last MSR.
    fn end(&self) -> u64;
    /// The smallest boundary after `x` where the intent may change (`end()` at the latest).
    fn next_boundary(&self, x: u64) -> u64;
    /// The intent for one access; `None` where any decision is fine (x2APIC).
    fn intent(&self, index: u32, access: AccessType) -> Option<Action>;
    /// The rule deciding one access, if a rule does (none for x2APIC MSRs).
    fn rule(&self, _index: u32, _access: AccessType) -> Option<usize> {
        None
    }
    /// The intent for reads and writes of `index` and the next boundary after it, at once.
    fn piece(&self, index: u32) -> ([Option<Action>; 2], u64) {
        (
            [
                self.intent(index, AccessType::Read),
                self.intent(index, AccessType::Write),
            ],
            self.next_boundary(u64::from(index)),
        )
    }
}

struct PolicyTarget<'a>(PolicyView<'a>);

impl Target for PolicyTarget<'_> {
    /// MSR 0xffffffff is left out: no range can cover it.
    fn end(&self) -> u64 {
        u64::from(u32::MAX)
    }

    fn next_boundary(&self, x: u64) -> u64 {
        self.0.next_boundary(x).min(self.end())
    }

    fn intent(&self, index: u32, access: AccessType) -> Option<Action> {
        if abi::is_x2apic(index) {
            None
        } else {
            Some(self.0.decide(index, access))
        }
    }

    fn rule(&self, index: u32, access: AccessType) -> Option<usize> {
        self.0.deciding_rule(index, access)
    }
}

/// The three families of packed ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Read = 0,
    Write = 1,
    Both = 2,
}

impl Family {
    const ALL: [Family; 3] = [Family::Read, Family::Write, Family::Both];

    fn flags(self) -> Access {
        match self {
            Family::Read => Access::READ,
            Family::Write => Access::WRITE,
            Family::Both => Access::READ_WRITE,
        }
    }
}

/// Which families must cover a piece (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Any covering works (no need, or x2APIC).
    Free,
    /// Reads differ from the default.
    Read,
    /// Writes differ from the default.
    Write,
    /// Both differ from the default.
    Both,
}

impl Class {
    /// The class of MSRs with these intents (reads, writes).
    fn of_piece(intent: [Option<Action>; 2], default: Action) -> Class {
        let differs = |i: usize| intent[i].is_some_and(|a| a != default);
        match (differs(0), differs(1)) {
            (false, false) => Class::Free,
            (true, false) => Class::Read,
            (false, true) => Class::Write,
            (true, true) => Class::Both,
        }
    }

    /// Whether covering by the families in `set` (bit `f` for family `f`) serves this class.
    fn allows(self, set: u8) -> bool {
        let matching = match self {
            Class::Free => return true,
            Class::Read => 1 << Family::Read as u8,
            Class::Write => 1 << Family::Write as u8,
            Class::Both => 1 << Family::Both as u8,
        };
        set & matching != 0 || set.count_ones() >= 2
    }
}

/// (ranges, bitmap bytes), compared in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Cost {
    pub ranges: u32,
    pub bytes: u32,
}

/// One packed range: a family over `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub family: Family,
    pub first: u32,
    pub last: u32,
}

/// The best packing found for one default action.
#[derive(Clone, Debug)]
pub(crate) struct Solution {
    pub cost: Cost,
    /// The ranges, when there are at most 16.
    pub runs: heapless::Vec<Run, MAX_RANGES>,
    /// Whether the search proved `cost` minimal.
    pub exact: bool,
    /// Whether the search ran (else `cost.ranges` is `lower` and there are no runs).
    pub searched: bool,
    /// A proven lower bound on the ranges: `ceil(needed MSRs / L)` per cluster, or after the
    /// search, the cost of the clusters it solved exactly and the larger of the relaxation's
    /// and the phase bound (see `solve`'s docs) for the others. When it equals `cost.ranges`, the count of ranges is
    /// proven minimal even if `exact` is false (the bytes are not).
    pub lower: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, Rule};
    use proptest::prelude::*;

    /// A policy over the small universe `[0, end)`.
    struct Small<'a> {
        policy: &'a Policy<8>,
        end: u32,
    }

    impl Target for Small<'_> {
        fn end(&self) -> u64 {
            u64::from(self.end)
        }
        fn next_boundary(&self, x: u64) -> u64 {
            let mut next = self.end();
            for r in self.policy.rules() {
                for b in [u64::from(r.first), u64::from(r.last) + 1] {
                    if b > x && b < next {
                        next = b;
                    }
                }
            }
            next
        }
        fn intent(&self, index: u32, access: AccessType) -> Option<Action> {
            Some(self.policy.decide(index, access))
        }
    }

    /// The best of both defaults, as `pack` chooses.
    fn packer_cost(target: &dyn Target, geo: Geometry) -> Cost {
        [Action::Allow, Action::Deny]
            .into_iter()
            .map(|d| {
                let s = solve(target, geo, d, u32::MAX);
                assert!(s.exact, "small searches are exact");
                s.cost
            })
            .min()
            .unwrap()
    }

    /// Exhaustive search over every filter of up to `max_ranges` ranges (any order, any flags,
    /// overlaps allowed) in the universe: is there a bitmap assignment that makes the filter
    /// decide as the target? Returns the cheapest cost found.
    fn brute_force(target: &Small<'_>, geo: Geometry, max_ranges: usize) -> Option<Cost> {
        let n = target.end;
        let mut spans = std::vec::Vec::new();
        for first in 0..n {
            for end in first + 1..=n {
                if end - first <= geo.max_nmsrs {
                    for flags in [Access::READ, Access::WRITE, Access::READ_WRITE] {
                        spans.push((flags, first, end));
                    }
                }
            }
        }
        let feasible = |default: Action, ranges: &[(Access, u32, u32)]| -> bool {
            if default == Action::Deny && ranges.is_empty() {
                return false; // the kernel refuses it
            }
            // bits[r][i]: None unset, Some(action) required.
            let mut bits = [[None::<Action>; 16]; 4];
            for i in 0..n {
                for access in AccessType::ALL {
                    let want = target.intent(i, access).unwrap();
                    match ranges
                        .iter()
                        .position(|&(f, a, e)| f.includes(access) && a <= i && i < e)
                    {
                        None if default != want => return false,
                        None => {}
                        Some(r) => match bits[r][i as usize] {
                            Some(have) if have != want => return false,
                            _ => bits[r][i as usize] = Some(want),
                        },
                    }
                }
            }
            true
        };
        let cost_of = |ranges: &[(Access, u32, u32)]| Cost {
            ranges: ranges.len() as u32,
            bytes: ranges
                .iter()
                .map(|&(_, a, e)| geo.bytes(u64::from(e - a)))
                .sum(),
        };
        for k in 0..=max_ranges {
            let mut best: Option<Cost> = None;
            let mut idx = [0usize; 4];
            let total = spans.len().pow(k as u32);
            for mut code in 0..total {
                for slot in idx.iter_mut().take(k) {
                    *slot = code % spans.len();
                    code /= spans.len();
                }
                let ranges: std::vec::Vec<_> = idx[..k].iter().map(|&i| spans[i]).collect();
                let cost = cost_of(&ranges);
                if best.is_some_and(|b| b <= cost) {
                    continue;
                }
                if feasible(Action::Allow, &ranges) || feasible(Action::Deny, &ranges) {
                    best = Some(cost);
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }

    fn small_policy(end: u32, max_rules: usize) -> impl Strategy<Value = Policy<8>> {
        let rule =
            (0..end, 1..=end, 1u32..=3, any::<bool>()).prop_map(move |(a, len, acc, deny)| {
                let last = (a + len - 1).min(end - 1);
                Rule::new(
                    a,
                    last,
                    Access::from_bits_truncate(acc),
                    if deny { Action::Deny } else { Action::Allow },
                )
            });
        (
            any::<bool>(),
            proptest::collection::vec(rule, 0..=max_rules),
        )
            .prop_map(|(deny, rules)| {
                let mut p = Policy::new(if deny { Action::Deny } else { Action::Allow });
                for r in rules {
                    p.push(r).unwrap();
                }
                p
            })
    }

    fn check_minimal(policy: &Policy<8>, end: u32, geo: Geometry, max_ranges: usize) {
        let target = Small { policy, end };
        let ours = packer_cost(&target, geo);
        let brute = brute_force(&target, geo, max_ranges);
        if ours.ranges as usize <= max_ranges {
            assert_eq!(Some(ours), brute, "policy:\n{policy}");
        } else {
            assert_eq!(brute, None, "a cheaper filter exists for:\n{policy}");
        }
    }

    /// The relaxation's bound (`solve`'s docs) never exceeds the minimum: per default, the
    /// exact search's count; over both, the exhaustive one's.
    fn check_relaxed_bound(policy: &Policy<8>, end: u32, geo: Geometry, max_ranges: usize) {
        let target = Small { policy, end };
        let mut least = u64::MAX;
        for d in [Action::Allow, Action::Deny] {
            let s = solve(&target, geo, d, u32::MAX);
            assert!(s.exact, "small searches are exact");
            for (name, bound) in [
                ("relaxation", solve::relaxed_lower(&target, geo, d)),
                ("phase", solve::phase_lower(&target, geo, d)),
            ] {
                assert!(
                    bound <= u64::from(s.cost.ranges),
                    "{name} bound {bound} above the minimum {} under default {d:?} for:\n{policy}",
                    s.cost.ranges
                );
                least = least.min(bound);
            }
        }
        if let Some(brute) = brute_force(&target, geo, max_ranges) {
            assert!(least <= u64::from(brute.ranges), "policy:\n{policy}");
        }
    }

    /// The pruning bound (`solve`'s docs, "Pruning") never prunes a minimal packing: each
    /// cluster, searched again with pruning against its own minimum count of ranges (the
    /// tightest incumbent a search can have), gives the same cost (`solve_checking_refine`
    /// panics otherwise); and that cost is the exhaustive search's.
    fn check_refined(policy: &Policy<8>, end: u32, geo: Geometry, max_ranges: usize) {
        let target = Small { policy, end };
        let mut best: Option<Cost> = None;
        for d in [Action::Allow, Action::Deny] {
            let plain = solve(&target, geo, d, u32::MAX);
            let refined = solve::solve_checking_refine(&target, geo, d);
            assert!(refined.exact, "policy:\n{policy}");
            assert_eq!(refined.cost, plain.cost, "policy:\n{policy}");
            best = Some(best.map_or(refined.cost, |b| b.min(refined.cost)));
        }
        if let Some(best) = best.filter(|b| b.ranges as usize <= max_ranges) {
            assert_eq!(
                Some(best),
                brute_force(&target, geo, max_ranges),
                "policy:\n{policy}"
            );
        }
    }

    /// Read-only and write-only MSRs alternating over 8 MSRs, ranges of at most 4: a READ and
    /// a WRITE family over the span (2 ranges each) is the minimum, 4, which the relaxation
    /// proves where `ceil(needed / L)` gives 2.
    #[test]
    fn the_relaxation_proves_alternating_reads_and_writes_need_four() {
        let mut policy = Policy::<8>::new(Action::Allow);
        for i in 0..8u32 {
            let access = if i % 2 == 0 {
                Access::READ
            } else {
                Access::WRITE
            };
            policy.push(Rule::single(i, access, Action::Deny)).unwrap();
        }
        let geo = Geometry {
            max_nmsrs: 4,
            word_bits: 2,
            word_bytes: 1,
        };
        let target = Small {
            policy: &policy,
            end: 11,
        };
        let s = solve(&target, geo, Action::Allow, u32::MAX);
        assert!(s.exact);
        assert_eq!(s.cost.ranges, 4);
        assert_eq!(solve::relaxed_lower(&target, geo, Action::Allow), 4);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// The relaxation's bound and the search pruned by it, on the same policies. Span limit
        /// binding (ranges of at most 4 MSRs in 12), 2 MSRs per bitmap word.
        #[test]
        fn bound_and_pruning_are_sound_with_split_ranges(policy in small_policy(12, 8)) {
            let geo = Geometry { max_nmsrs: 4, word_bits: 2, word_bytes: 1 };
            check_relaxed_bound(&policy, 12, geo, 0);
            check_refined(&policy, 12, geo, 0);
        }

        /// Ranges of at most 2 MSRs, one MSR per word: the bound's coverage term weighs most,
        /// and runs are cut often.
        #[test]
        fn bound_and_pruning_are_sound_with_tiny_ranges(policy in small_policy(10, 8)) {
            let geo = Geometry { max_nmsrs: 2, word_bits: 1, word_bytes: 1 };
            check_relaxed_bound(&policy, 10, geo, 0);
            check_refined(&policy, 10, geo, 0);
        }
    }

    /// The phase bound (`solve`'s docs, "A bound that keeps the rounding") never exceeds the
    /// exact search's minimum, per default, on a grid coarser than one MSR (ranges of at most
    /// 18 MSRs: 9 phases, grid points 2 MSRs apart) over 48 MSRs, where runs cross several
    /// multiples of `L`.
    fn check_phase_bound(policy: &Policy<8>, end: u32, geo: Geometry) {
        let target = Small { policy, end };
        for d in [Action::Allow, Action::Deny] {
            let s = solve(&target, geo, d, u32::MAX);
            assert!(s.exact, "small searches are exact");
            let bound = solve::phase_lower(&target, geo, d);
            assert!(
                bound <= u64::from(s.cost.ranges),
                "phase bound {bound} above the minimum {} under default {d:?} for:\n{policy}",
                s.cost.ranges
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn phase_bound_is_sound_on_a_coarse_grid(policy in small_policy(48, 8)) {
            let geo = Geometry { max_nmsrs: 18, word_bits: 3, word_bytes: 1 };
            check_phase_bound(&policy, 48, geo);
        }

        /// Grid points 4 MSRs apart (16 phases of ranges of at most 64), over 150 MSRs.
        #[test]
        fn phase_bound_is_sound_with_sixteen_phases(policy in small_policy(150, 8)) {
            let geo = Geometry { max_nmsrs: 64, word_bits: 4, word_bytes: 1 };
            check_phase_bound(&policy, 150, geo);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// The grids the other tests do not reach: one phase (17 has no divisor from 2 to 16,
        /// so the grid step is a whole range), an odd step (48 = 16 * 3) and ten phases (20).
        #[test]
        fn phase_bound_is_sound_on_uneven_grids(
            policy in small_policy(60, 8),
            which in 0usize..3,
        ) {
            let geo = [
                Geometry { max_nmsrs: 17, word_bits: 1, word_bytes: 1 },
                Geometry { max_nmsrs: 48, word_bits: 4, word_bytes: 1 },
                Geometry { max_nmsrs: 20, word_bits: 4, word_bytes: 1 },
            ][which];
            check_phase_bound(&policy, 60, geo);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Against the exhaustive search too (fewer MSRs, fewer ranges): the bound is below
        /// its minimum and the pruned search finds it.
        #[test]
        fn bound_and_pruning_meet_the_exhaustive_minimum(policy in small_policy(8, 6)) {
            // The search's cost model needs whole words per range (see `Geometry`).
            let geo = Geometry { max_nmsrs: 3, word_bits: 1, word_bytes: 1 };
            check_relaxed_bound(&policy, 8, geo, 3);
            check_refined(&policy, 8, geo, 3);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Span limit binding (ranges of at most 4 MSRs in 8), 2 MSRs per bitmap word.
        #[test]
        fn minimal_versus_exhaustive_with_split_ranges(policy in small_policy(8, 6)) {
            let geo = Geometry { max_nmsrs: 4, word_bits: 2, word_bytes: 1 };
            check_minimal(&policy, 8, geo, 3);
        }

        /// No span limit in a universe of 11 MSRs, 3 MSRs per bitmap word.
        #[test]
        fn minimal_versus_exhaustive_unsplit(policy in small_policy(11, 6)) {
            let geo = Geometry { max_nmsrs: 64, word_bits: 3, word_bytes: 1 };
            check_minimal(&policy, 11, geo, 2);
        }
    }
}

#[cfg(test)]
mod kernel_geometry_tests {
    use crate::{Access, AccessType, Action, PackError, Policy, Rule};
    use proptest::prelude::*;

    /// MSR regions where VMM policies live; rules are drawn near them so that most policies fit.
    const REGIONS: [u32; 5] = [0x0, 0x7f0, 0x4000_0000, 0xc000_0000, 0xffff_ff00];

    fn rule() -> impl Strategy<Value = Rule> {
        (
            0..REGIONS.len(),
            0u32..0x240,
            0u32..0x120,
            1u32..=3,
            any::<bool>(),
        )
            .prop_map(|(region, offset, len, access, deny)| {
                let first = REGIONS[region].saturating_add(offset);
                Rule::new(
                    first,
                    first.saturating_add(len),
                    Access::from_bits_truncate(access),
                    if deny { Action::Deny } else { Action::Allow },
                )
            })
    }

    fn policy() -> impl Strategy<Value = Policy<12>> {
        (any::<bool>(), proptest::collection::vec(rule(), 0..12)).prop_map(|(deny, rules)| {
            let mut p = Policy::new(if deny { Action::Deny } else { Action::Allow });
            for r in rules {
                p.push(r).unwrap();
            }
            p
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The packed filter decides as the policy at every rule boundary ±1 and at random MSRs.
        #[test]
        fn packed_filter_decides_as_policy(policy in policy(), probes in proptest::collection::vec(any::<u32>(), 32)) {
            match policy.pack() {
                Ok(packed) => {
                    let filter = &packed.filter;
                    prop_assert!(filter.range_count() <= 16);
                    let mut points = probes;
                    for r in policy.rules() {
                        for b in [r.first, r.last] {
                            points.extend([b.wrapping_sub(1), b, b.wrapping_add(1)]);
                        }
                    }
                    points.extend([0, 0x7ff, 0x800, 0x8ff, 0x900, u32::MAX]);
                    for &i in &points {
                        for access in AccessType::ALL {
                            prop_assert_eq!(
                                filter.decide(i, access),
                                policy.decide(i, access),
                                "MSR {:#x} {} in\n{}\npacked as {}", i, access, policy, filter
                            );
                        }
                    }
                    prop_assert!(filter.lints().is_empty(), "packed filters carry no lint: {:?}", filter.lints());
                }
                Err(PackError::DeniesX2apic { rule, index, access }) => {
                    prop_assert!(crate::abi::is_x2apic(index));
                    prop_assert_eq!(policy.rules().iter().rposition(|r| r.covers(index, access)), Some(rule));
                    prop_assert_eq!(policy.rules()[rule].action, Action::Deny);
                }
                Err(e @ PackError::Internal { .. }) => prop_assert!(false, "{}", e),
                Err(PackError::LastMsrSplit { .. }) => {
                    prop_assert_ne!(
                        policy.decide(u32::MAX, AccessType::Read),
                        policy.decide(u32::MAX, AccessType::Write)
                    );
                }
                Err(PackError::TooManyRanges { needed, rules, default_needs_ranges, .. }) => {
                    prop_assert!(needed > 16);
                    prop_assert!(!rules.is_empty() || default_needs_ranges);
                }
            }
        }
    }

    /// Many short rules spread over more than one range's span: the searches that split ranges
    /// and their fallbacks (bounds of the search hit) must still give an exact filter.
    fn spread_policy() -> impl Strategy<Value = Policy<96>> {
        (
            any::<bool>(),
            proptest::collection::vec((0u32..0x20, 0u32..4, 1u32..=3, any::<bool>()), 20..96),
            0x100u32..0x1800,
        )
            .prop_map(|(deny, rules, step)| {
                let mut p = Policy::new(if deny { Action::Deny } else { Action::Allow });
                for (i, (jitter, len, access, rdeny)) in rules.into_iter().enumerate() {
                    let first = 0x10_0000 + i as u32 * step + jitter;
                    p.push(Rule::new(
                        first,
                        first + len,
                        Access::from_bits_truncate(access),
                        if rdeny { Action::Deny } else { Action::Allow },
                    ))
                    .unwrap();
                }
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn spread_policies_pack_exactly_or_fail_loudly(policy in spread_policy()) {
            match policy.pack() {
                Ok(packed) => {
                    let f = &packed.filter;
                    prop_assert!(f.range_count() <= 16);
                    for r in policy.rules() {
                        for i in [r.first.wrapping_sub(1), r.first, r.last, r.last.wrapping_add(1)] {
                            for a in AccessType::ALL {
                                prop_assert_eq!(f.decide(i, a), policy.decide(i, a), "MSR {:#x} {}", i, a);
                            }
                        }
                    }
                }
                Err(PackError::TooManyRanges { needed, .. }) => prop_assert!(needed > 16),
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }

    #[test]
    fn forty_spread_denies_pack_into_one_exact_filter() {
        // The reviewer's case: 40 single-MSR denies 0x1000 apart once fell through every search
        // and came back as an empty filter.
        let mut policy = Policy::<40>::new(Action::Allow);
        for i in 0..40u32 {
            policy
                .push(Rule::single(
                    0x10_0000 + i * 0x1000,
                    Access::READ_WRITE,
                    Action::Deny,
                ))
                .unwrap();
        }
        match policy.pack() {
            Ok(packed) => {
                for i in 0..40u32 {
                    assert_eq!(
                        packed
                            .filter
                            .decide(0x10_0000 + i * 0x1000, AccessType::Read),
                        Action::Deny
                    );
                }
                assert!(packed.filter.range_count() <= 16);
            }
            Err(e) => assert!(
                matches!(e, PackError::TooManyRanges { needed, .. } if needed > 16),
                "{e}"
            ),
        }
    }

    #[test]
    fn the_search_counts_bitmap_bytes_as_the_kernel_reads_them() {
        for n in [1u32, 63, 64, 65, 0x2fff, 0x3000] {
            assert_eq!(
                super::Geometry::KERNEL.bytes(u64::from(n)) as usize,
                crate::abi::bitmap_bytes(n)
            );
        }
        assert_eq!(super::Geometry::KERNEL.max_nmsrs, crate::abi::MAX_NMSRS);
    }

    #[test]
    fn deny_everything_packs_to_one_deny_range() {
        let policy: Policy<1> = Policy::parse("default deny").unwrap();
        let filter = policy.pack().unwrap().filter;
        assert_eq!(filter.default_action(), Action::Deny);
        assert_eq!(filter.range_count(), 1);
        assert_eq!(filter.decide(0, AccessType::Read), Action::Deny);
        assert_eq!(filter.decide(0x808, AccessType::Read), Action::Allow);
    }

    #[test]
    fn allow_everything_packs_to_no_filtering() {
        let policy: Policy<1> = Policy::parse("default allow").unwrap();
        assert!(policy.pack().unwrap().filter.is_unfiltered());
    }

    #[test]
    fn x2apic_deny_is_refused_but_default_deny_is_not() {
        let policy: Policy<2> = Policy::parse("default allow\ndeny rw 0x700-0x80f").unwrap();
        let err = policy.pack().unwrap_err();
        assert_eq!(
            err,
            PackError::DeniesX2apic {
                rule: 0,
                index: 0x800,
                access: AccessType::Read
            }
        );
        assert!(std::format!("{err}").contains("never filters x2APIC"));
        // An exception re-allowing the x2APIC MSRs makes it packable.
        let policy: Policy<2> =
            Policy::parse("default allow\ndeny rw 0x700-0x80f\nallow rw 0x800-0x8ff").unwrap();
        assert!(policy.pack().is_ok());
        // A default deny leaves x2APIC MSRs to the kernel.
        let policy: Policy<2> = Policy::parse("default deny\nallow rw 0x10").unwrap();
        let filter = policy.pack().unwrap().filter;
        assert_eq!(filter.decide(0x830, AccessType::Write), Action::Allow);
    }

    #[test]
    fn too_many_ranges_names_count_and_rules() {
        let mut policy = Policy::<20>::new(Action::Allow);
        for i in 0..17u32 {
            policy
                .push(Rule::single(
                    i * 0x10_0000,
                    Access::READ_WRITE,
                    Action::Deny,
                ))
                .unwrap();
        }
        let err = policy.pack().unwrap_err();
        let PackError::TooManyRanges {
            needed,
            rules,
            more,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(*needed, 17);
        assert_eq!(rules.len(), 16, "the first 16 rules are named");
        assert_eq!(*more, 1, "and one more is counted");
        let shown = std::format!("{err}");
        assert!(
            shown.starts_with("the policy needs 17 kernel ranges"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "(the first 16; 1 more rule wants the other action than the filter's default)"
            ),
            "{shown}"
        );
    }

    #[test]
    fn too_many_ranges_names_the_rule_that_forced_the_default() {
        let policy: Policy<1> = Policy::parse("default allow\ndeny rw 0xffffffff").unwrap();
        let err = policy.pack().unwrap_err();
        let PackError::TooManyRanges {
            default_forced_by,
            default_needs_ranges,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!((*default_forced_by, *default_needs_ranges), (Some(0), true));
        assert!(
            std::format!("{err}").contains("rule 0 decides MSR 0xffffffff"),
            "{err}"
        );
    }

    #[test]
    fn long_spans_split_into_full_ranges() {
        // 0x6001 MSRs differing from the default need three ranges of at most 0x3000.
        let policy: Policy<1> = Policy::parse("default allow\ndeny r 0x100000+0x6001").unwrap();
        let packed = policy.pack().unwrap();
        assert_eq!(packed.filter.range_count(), 3);
        assert_eq!(packed.filter.bitmap_bytes(), 0x600 + 0x600 + 8);
        assert!(packed.proven_minimal);
    }
}

#[cfg(test)]
mod relaxation_at_kernel_scale {
    use super::*;
    use std::vec::Vec;

    /// Shape A, B or C of `tests/shapes` over `span` MSRs, swept under default allow and
    /// given to `f`.
    fn on_shape<R>(kind: char, seed: u64, span: u32, f: impl FnOnce(&Sweep) -> R) -> R {
        let rules: Vec<Rule> = match kind {
            'A' => shapes::alternating(seed, span),
            'B' => shapes::mixed_runs(seed, span),
            _ => shapes::sparse_runs(seed, span),
        };
        let mut scratch = std::vec![0; sweep::scratch_len(rules.len())];
        f(&Sweep::new(Action::Allow, &rules, &mut scratch))
    }

    /// Where the search is exact (clusters of 0x5000 MSRs), the relaxation's bound is at most
    /// its count, and here meets it (4: two families over 0x5000 MSRs).
    #[test]
    fn the_bound_meets_exact_searches_of_wide_mixed_clusters() {
        for kind in ['A', 'B', 'C'] {
            on_shape(kind, 1, 0x5000, |sweep| {
                let s = solve(sweep, Geometry::KERNEL, Action::Allow, 64);
                assert!(s.exact, "shape {kind}");
                let bound = solve::relaxed_lower(sweep, Geometry::KERNEL, Action::Allow);
                assert_eq!((bound, s.cost.ranges), (4, 4), "shape {kind}");
            });
        }
    }

    /// The phase bound meets the exact searches of the clusters of 0x5000 MSRs (4), and over
    /// 0x10000 MSRs of mixed runs it gives 12, the count the search finds
    /// (`tests/pack_scale.rs`), where the relaxation gives 11.
    #[test]
    fn the_phase_bound_keeps_the_rounding_of_wide_mixed_clusters() {
        for (kind, seed, span, want) in [
            ('A', 1, 0x5000, 4),
            ('B', 1, 0x5000, 4),
            ('C', 1, 0x5000, 4),
            ('B', 1, 0x10000, 12),
            ('B', 2, 0x10000, 12),
            ('B', 3, 0x10000, 12),
        ] {
            on_shape(kind, seed, span, |sweep| {
                let bound = solve::phase_lower(sweep, Geometry::KERNEL, Action::Allow);
                assert_eq!(bound, want, "shape {kind}, seed {seed}, span {span:#x}");
                if span == 0x10000 {
                    let relaxed = solve::relaxed_lower(sweep, Geometry::KERNEL, Action::Allow);
                    assert_eq!(relaxed, 11, "shape {kind}, seed {seed}, span {span:#x}");
                }
            });
        }
    }

    /// The same clusters searched again with pruning against their minimum count of ranges
    /// (`solve`'s docs, "Pruning"): the pruned search stays exact and finds the same cost.
    #[test]
    fn pruning_keeps_the_minimum_of_wide_mixed_clusters() {
        for kind in ['A', 'B', 'C'] {
            let s = on_shape(kind, 1, 0x5000, |sweep| {
                solve::solve_checking_refine(sweep, Geometry::KERNEL, Action::Allow)
            });
            assert!(s.exact, "shape {kind}");
        }
    }
}
