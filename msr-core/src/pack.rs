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
//! The MSR space is cut into *clusters* of needed MSRs that one range could bridge (gaps shorter
//! than 0x3000 MSRs); clusters are independent. Within a cluster a dynamic program walks the
//! pieces between boundaries (policy boundaries, and shifts of them by multiples of 0x3000 where
//! ranges must be split), choosing for each piece which families cover it; a state remembers where
//! each open range started, and states that another state dominates (same open families, starts
//! no earlier, cost no higher) are dropped. The cost is (ranges, bitmap bytes), compared in that
//! order. Both default actions are tried.
//!
//! The search allocates nothing: its state lives on the stack, about 100 KiB at the deepest
//! (two layers of 128 states, the positions of one cluster, and the 25 KiB filter being built).
//! Call it on a thread with room for that.
//!
//! The result is minimal unless a bound of the search was hit (more than 128 live states in one
//! piece, more than 1024 pieces in a cluster); then the filter is still exact but
//! [`Packed::proven_minimal`] is false.

use core::fmt;

use crate::abi::{self, MAX_NMSRS, MAX_RANGES};
use crate::policy::{Policy, PolicyView};
use crate::{Access, AccessType, Action, Filter};

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
        /// Ranges the best packing found needs.
        needed: usize,
        /// The rules (positions, first 16) that need ranges: those that decide some MSR
        /// differently from the filter's default action.
        rules: RuleList,
        /// Whether the policy's own default action needs ranges too (the filter's default
        /// action had to be the other one).
        default_needs_ranges: bool,
        /// The rule that forced the filter's default action away from the policy's: it decides
        /// MSR 0xffffffff, which only the default action can decide.
        default_forced_by: Option<usize>,
    },
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
                rules,
                default_needs_ranges,
                default_forced_by,
            } => {
                write!(
                    f,
                    "the policy needs {needed} kernel ranges, more than the {MAX_RANGES} a filter holds; ranges are needed by"
                )?;
                let mut sep = " ";
                if !rules.is_empty() {
                    write!(f, " rules")?;
                    for rule in rules.iter() {
                        write!(f, "{sep}{rule}")?;
                        sep = ", ";
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

impl<const N: usize> Policy<N> {
    /// Packs the policy: see [`PolicyView::pack`].
    pub fn pack(&self) -> Result<Packed, PackError> {
        self.view().pack()
    }
}

impl PolicyView<'_> {
    /// Packs the policy into the fewest kernel ranges, then the fewest bitmap bytes, such that
    /// the filter decides every MSR and access as the policy does.
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
        self.check_x2apic()?;
        let target = PolicyTarget(*self);
        let mut best: Option<(Solution, Action)> = None;
        // The policy's own default first, so that it wins ties.
        for default in [self.default_action(), self.default_action().invert()] {
            // No range can cover MSR 0xffffffff (its end, base + nmsrs, would be 2^32, which is 0
            // in the kernel's 32-bit arithmetic): only the default action decides it.
            if AccessType::ALL
                .iter()
                .any(|&a| self.decide(u32::MAX, a) != default)
            {
                continue;
            }
            let solution = solve(&target, Geometry::KERNEL, default);
            if best.as_ref().is_none_or(|(b, _)| solution.cost < b.cost) {
                best = Some((solution, default));
            }
        }
        let Some((solution, default)) = best else {
            return Err(PackError::LastMsrSplit {
                read_rule: self.deciding_rule(u32::MAX, AccessType::Read),
                write_rule: self.deciding_rule(u32::MAX, AccessType::Write),
            });
        };
        if solution.cost.ranges as usize > MAX_RANGES {
            let forced = default != self.default_action();
            let default_forced_by = if forced {
                AccessType::ALL
                    .iter()
                    .find_map(|&a| self.deciding_rule(u32::MAX, a))
                    .filter(|_| {
                        AccessType::ALL
                            .iter()
                            .any(|&a| self.decide(u32::MAX, a) != self.default_action())
                    })
            } else {
                None
            };
            return Err(PackError::TooManyRanges {
                needed: solution.cost.ranges as usize,
                rules: self.rules_needing_ranges(default),
                default_needs_ranges: forced,
                default_forced_by,
            });
        }
        // Single-access ranges first: where they overlap a READ|WRITE range they take their
        // access and leave it the other.
        let mut ordered: heapless::Vec<Run, MAX_RANGES> = heapless::Vec::new();
        for pass in [false, true] {
            for run in solution.runs.iter() {
                if (run.family == Family::Both) == pass {
                    let _ = ordered.push(*run);
                }
            }
        }
        let parts: heapless::Vec<(Access, u32, u32), MAX_RANGES> = ordered
            .iter()
            .map(|r| (r.family.flags(), r.first, r.last - r.first + 1))
            .collect();
        let bit = |slot: usize, index: u32| -> Action {
            let read = self.decide(index, AccessType::Read);
            let write = self.decide(index, AccessType::Write);
            match ordered[slot].family {
                Family::Read => read,
                Family::Write => write,
                // A READ|WRITE range serves the access no single range before it takes.
                Family::Both => {
                    let read_taken = ordered
                        .iter()
                        .any(|r| r.family == Family::Read && r.first <= index && index <= r.last);
                    if read_taken {
                        write
                    } else {
                        read
                    }
                }
            }
        };
        // The action is constant between policy boundaries and range boundaries.
        let segment = |slot: usize, index: u32| -> (Action, u32) {
            let at = u64::from(index);
            let mut end = target.next_boundary(at);
            for r in ordered.iter() {
                for b in [u64::from(r.first), u64::from(r.last) + 1] {
                    if b > at && b < end {
                        end = b;
                    }
                }
            }
            (
                bit(slot, index),
                u32::try_from(end - at).unwrap_or(u32::MAX),
            )
        };
        let filter = Filter::from_packed(default, &parts, &segment);
        if solution.runs.len() != solution.cost.ranges as usize {
            return Err(PackError::Internal {
                index: 0,
                access: AccessType::Read,
            });
        }
        self.check_packed(&filter)?;
        Ok(Packed {
            filter,
            proven_minimal: solution.exact,
        })
    }

    /// Checks the packed filter against the policy at both sides of every boundary (where a
    /// wrong filter would first differ), so that a packer bug is an error, never a silently
    /// wrong filter.
    fn check_packed(&self, filter: &Filter) -> Result<(), PackError> {
        let target = PolicyTarget(*self);
        let mut at = 0u64;
        loop {
            for index in [at, at.saturating_sub(1)] {
                let index = index.min(u64::from(u32::MAX)) as u32;
                for access in AccessType::ALL {
                    if filter.decide(index, access) != self.decide(index, access) {
                        return Err(PackError::Internal { index, access });
                    }
                }
            }
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

    fn check_x2apic(&self) -> Result<(), PackError> {
        let mut index = abi::X2APIC_FIRST;
        loop {
            for access in AccessType::ALL {
                if let Some(rule) = self.rules().iter().rposition(|r| r.covers(index, access)) {
                    if self.rules()[rule].action == Action::Deny {
                        return Err(PackError::DeniesX2apic {
                            rule,
                            index,
                            access,
                        });
                    }
                }
            }
            // The rules decide alike up to the next boundary.
            let next = self.next_boundary(u64::from(index));
            if next > u64::from(abi::X2APIC_LAST) {
                return Ok(());
            }
            index = next as u32;
        }
    }

    fn rules_needing_ranges(&self, default: Action) -> RuleList {
        let mut list = RuleList::new();
        let target = PolicyTarget(*self);
        let mut start = 0u64;
        while start < target.end() {
            let index = start as u32;
            for access in AccessType::ALL {
                if let Some(rule) = self.deciding_rule(index, access) {
                    let rule16 = u16::try_from(rule).unwrap_or(u16::MAX);
                    if self.rules()[rule].action != default && !list.contains(&rule16) {
                        let _ = list.push(rule16);
                    }
                }
            }
            start = target.next_boundary(start);
        }
        list.sort_unstable();
        list
    }
}

/// The sizes the search works with: the kernel's, or small ones in the exhaustive tests.
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
    fn of(target: &dyn Target, index: u32, default: Action) -> Class {
        let differs = |access| target.intent(index, access).is_some_and(|a| a != default);
        match (differs(AccessType::Read), differs(AccessType::Write)) {
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
    pub exact: bool,
}

const NO_START: u16 = u16::MAX;
/// Live states kept per piece.
const MAX_STATES: usize = 128;
/// Pieces (positions) per cluster.
const MAX_POSITIONS: usize = 1024;
/// Positions of one search: the cluster's pieces plus, in the last resort, a grid of at most
/// `2 * MAX_RANGES` cuts.
type Positions = heapless::Vec<u64, { MAX_POSITIONS + 2 * MAX_RANGES }>;

#[derive(Clone, Debug)]
struct State {
    /// Per family: the position index where its open range starts, or NO_START.
    starts: [u16; 3],
    cost: Cost,
    runs: heapless::Vec<Run, MAX_RANGES>,
}

impl State {
    fn open_set(&self) -> u8 {
        let mut set = 0;
        for f in Family::ALL {
            if self.starts[f as usize] != NO_START {
                set |= 1 << f as u8;
            }
        }
        set
    }

    /// Whether `self` is at least as good as `other` in every future.
    fn dominates(&self, other: &State) -> bool {
        self.open_set() == other.open_set()
            && self.cost <= other.cost
            && self
                .starts
                .iter()
                .zip(other.starts.iter())
                .all(|(a, b)| a >= b)
    }
}

/// Searches the best packing of `target` with the given default action.
pub(crate) fn solve(target: &dyn Target, geo: Geometry, default: Action) -> Solution {
    let mut total = Solution {
        cost: Cost::default(),
        runs: heapless::Vec::new(),
        exact: true,
    };
    let limit = u64::from(geo.max_nmsrs);
    // The open cluster: piece starts from its first need, and where its last need ends.
    let mut pieces: heapless::Vec<u64, MAX_POSITIONS> = heapless::Vec::new();
    let mut last_need_end = 0u64;
    let mut start = 0u64;
    let end = target.end();
    while start < end {
        let next = target.next_boundary(start);
        let need = Class::of(target, start as u32, default) != Class::Free;
        if !pieces.is_empty()
            && (need && start + 1 - last_need_end >= limit || start >= last_need_end + limit)
        {
            // No range can bridge from the cluster's last need to here.
            close_cluster(target, geo, default, &mut pieces, last_need_end, &mut total);
        }
        if need || !pieces.is_empty() {
            if pieces.is_full() {
                // Too many pieces for one search: solve what we have, continue with a new one.
                total.exact = false;
                close_cluster(target, geo, default, &mut pieces, start, &mut total);
            }
            if need || !pieces.is_empty() {
                let _ = pieces.push(start);
            }
        }
        if need {
            last_need_end = next;
        }
        start = next;
    }
    if !pieces.is_empty() {
        close_cluster(target, geo, default, &mut pieces, last_need_end, &mut total);
    }
    if total.cost.ranges == 0 && default == Action::Deny {
        // The kernel refuses DEFAULT_DENY without ranges: add one that denies MSR 0, which the
        // intent denies anyway (nothing differs from the default).
        total.cost = Cost {
            ranges: 1,
            bytes: geo.bytes(1),
        };
        let _ = total.runs.push(Run {
            family: Family::Both,
            first: 0,
            last: 0,
        });
    }
    total
}

/// Solves the cluster whose pieces start at `pieces` and which ends at `cluster_end`, adds the
/// result to `total` and empties `pieces`.
fn close_cluster(
    target: &dyn Target,
    geo: Geometry,
    default: Action,
    pieces: &mut heapless::Vec<u64, MAX_POSITIONS>,
    cluster_end: u64,
    total: &mut Solution,
) {
    let limit = u64::from(geo.max_nmsrs);
    let first = pieces[0];
    let mut positions: Positions = heapless::Vec::new();
    for &p in pieces.iter().filter(|&&p| p < cluster_end) {
        // Cannot fail: `positions` holds more than `pieces`.
        let _ = positions.push(p);
    }
    if cluster_end - first > limit {
        // Ranges must split. A split range wastes least bitmap when its pieces are whole words
        // long, so the cuts worth trying are the boundaries shifted by whole words (the limit
        // itself is a whole number of words).
        let bounds = positions.clone();
        let exact_steps = add_shifts(
            &mut positions,
            &bounds,
            first,
            cluster_end,
            u64::from(geo.word_bits),
        );
        if !exact_steps {
            // Too many: shift by whole ranges only; the result may not be minimal.
            total.exact = false;
            positions = bounds.clone();
            if !add_shifts(&mut positions, &bounds, first, cluster_end, limit) {
                positions = bounds.clone();
                // Between two ranges lies a gap without needed MSRs, shorter than the limit
                // (else the cluster would have split there), so k ranges span less than
                // 2 * k * limit MSRs: a cluster this long needs more than 16 ranges.
                let span = cluster_end - first;
                if span >= 2 * MAX_RANGES as u64 * limit {
                    total.cost.ranges += span.div_ceil(2 * limit) as u32;
                    pieces.clear();
                    return;
                }
                // The coarsest cuts that keep every piece within one range: a grid of the limit
                // from the cluster's start (at most 32 more positions, which fit).
                let mut cut = first + limit;
                while cut < cluster_end {
                    let _ = positions.push(cut);
                    cut += limit;
                }
            }
        }
        positions.sort_unstable();
        let mut deduped: Positions = heapless::Vec::new();
        for &p in positions.iter() {
            if deduped.last() != Some(&p) {
                let _ = deduped.push(p);
            }
        }
        positions = deduped;
    }
    let result = solve_cluster(target, geo, default, &positions, cluster_end);
    total.cost.ranges += result.cost.ranges;
    total.cost.bytes += result.cost.bytes;
    total.exact &= result.exact;
    for run in result.runs {
        let _ = total.runs.push(run);
    }
    pieces.clear();
}

/// Adds every boundary (and the cluster's end) shifted up and down by multiples of `step` within
/// the cluster; false when they do not fit.
fn add_shifts(
    positions: &mut Positions,
    bounds: &[u64],
    first: u64,
    cluster_end: u64,
    step: u64,
) -> bool {
    for &b in bounds.iter().chain([cluster_end].iter()) {
        let mut up = b + step;
        while up < cluster_end {
            if positions.push(up).is_err() {
                return false;
            }
            up += step;
        }
        let mut down = b;
        while down >= first + step {
            down -= step;
            if positions.push(down).is_err() {
                return false;
            }
        }
    }
    true
}

/// The dynamic program over the pieces `[positions[j], positions[j + 1])` (the last one ends at
/// `cluster_end`).
fn solve_cluster(
    target: &dyn Target,
    geo: Geometry,
    default: Action,
    positions: &[u64],
    cluster_end: u64,
) -> Solution {
    let limit = u64::from(geo.max_nmsrs);
    let pos = |j: usize| positions.get(j).copied().unwrap_or(cluster_end);
    let mut exact = true;
    let mut layer: heapless::Vec<State, MAX_STATES> = heapless::Vec::new();
    let _ = layer.push(State {
        starts: [NO_START; 3],
        cost: Cost::default(),
        runs: heapless::Vec::new(),
    });
    for j in 0..positions.len() {
        let (piece_start, piece_end) = (pos(j), pos(j + 1));
        let class = Class::of(target, piece_start as u32, default);
        let mut next: heapless::Vec<State, MAX_STATES> = heapless::Vec::new();
        for state in layer.iter() {
            'sets: for set in 0u8..8 {
                if !class.allows(set) {
                    continue;
                }
                let mut new = state.clone();
                for f in Family::ALL {
                    let fi = f as usize;
                    let was_open = state.starts[fi] != NO_START;
                    let stays_on = set & (1 << fi) != 0;
                    if was_open {
                        let run_start = pos(usize::from(state.starts[fi]));
                        if stays_on && piece_end - run_start <= limit {
                            continue;
                        }
                        close_run(&mut new, f, run_start, piece_start, geo);
                    }
                    if stays_on {
                        if piece_end - piece_start > limit {
                            continue 'sets;
                        }
                        new.starts[fi] = j as u16;
                        new.cost.ranges += 1;
                    }
                }
                exact &= insert(&mut next, new);
            }
        }
        layer = next;
    }
    let mut best: Option<State> = None;
    for state in layer.iter() {
        let mut done = state.clone();
        for f in Family::ALL {
            let s = state.starts[f as usize];
            if s != NO_START {
                close_run(&mut done, f, pos(usize::from(s)), cluster_end, geo);
            }
        }
        if best.as_ref().is_none_or(|b| done.cost < b.cost) {
            best = Some(done);
        }
    }
    match best {
        Some(b) => Solution {
            cost: b.cost,
            runs: b.runs,
            exact,
        },
        // Unreachable in practice: every piece admits covering by all three families.
        None => Solution {
            cost: Cost {
                ranges: u32::MAX / 2,
                bytes: 0,
            },
            runs: heapless::Vec::new(),
            exact: false,
        },
    }
}

fn close_run(state: &mut State, family: Family, start: u64, end: u64, geo: Geometry) {
    state.cost.bytes += geo.bytes(end - start);
    state.starts[family as usize] = NO_START;
    // Past 16 ranges the packing fails anyway; only the count matters then.
    let _ = state.runs.push(Run {
        family,
        first: start as u32,
        last: (end - 1) as u32,
    });
}

/// Adds `new` to a layer unless a state there dominates it; drops the states it dominates.
/// Returns false when the layer was full and a state had to be dropped.
fn insert(layer: &mut heapless::Vec<State, MAX_STATES>, new: State) -> bool {
    if layer.iter().any(|s| s.dominates(&new)) {
        return true;
    }
    layer.retain(|s| !new.dominates(s));
    match layer.push(new) {
        Ok(()) => true,
        Err(new) => {
            // Keep the cheaper of the new state and the worst one.
            if let Some((worst, _)) = layer.iter().enumerate().max_by_key(|(_, s)| s.cost) {
                if new.cost < layer[worst].cost {
                    layer[worst] = new;
                }
            }
            false
        }
    }
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
                let s = solve(target, geo, d);
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
        let PackError::TooManyRanges { needed, rules, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*needed, 17);
        assert_eq!(rules.len(), 16, "the first 16 rules are named");
        assert!(std::format!("{err}").starts_with("the policy needs 17 kernel ranges"));
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
        // The search space of 0x6001 MSRs cut at every 64th exceeds the search's state bound, so
        // minimality is not proven here, though the result is the optimum.
        assert!(!packed.proven_minimal);
    }
}
