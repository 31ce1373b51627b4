//! The exact search: a dynamic program over *runs*.
//!
//! # Runs instead of ranges
//! Within one family, ranges never overlap, so the MSRs a family covers form maximal *runs*
//! (touching ranges merged). A run of `len` MSRs needs at least `ceil(len / L)` ranges
//! (`L` = 0x3000, the most one range covers) and at least `ceil(len / 64)` bitmap words, since
//! a sum of ceilings is at least the ceiling of the sum; cutting it at every `L` MSRs from its
//! start reaches both at once, because `L` is a whole number of words. So the cost of a run
//! depends on its length only:
//!
//! `c(len) = (ceil(len / L), 8 * ceil(len / 64))`,
//!
//! monotone in `len` and subadditive (`c(x + y) <= c(x) + c(y)`). A packing is a choice, for
//! every MSR, of the set of families covering it, valid for the MSR's class (see the module docs
//! of `pack`); its cost is the sum of `c` over the runs that choice forms. The length limit has
//! gone: the search never needs to know where a run is cut into ranges.
//!
//! # Clusters
//! A free gap of at least `L` MSRs splits the problem: a run across it costs at least as much as
//! the two runs on either side (`ceil((a + g + b) / L) >= ceil((a + b) / L) + 1 >=
//! ceil(a / L) + ceil(b / L)` for `g >= L`, and the same for words since `L >= 64`). So each
//! *cluster* (needed MSRs with gaps shorter than `L`) is solved alone, and the sum of
//! `ceil(needed MSRs / L)` over clusters is a lower bound on the number of ranges (a range
//! covers at most `L` MSRs and cannot reach two clusters).
//!
//! # Where the choice changes
//! The MSR space is cut into *pieces* of constant class (consecutive intervals of one class
//! merged). The set of families may change at a piece boundary or inside a piece. Inside a
//! piece every valid set stays valid, so a change at `m` from `S1` to `S2` (closing the runs of
//! `C = S1 \ S2`, opening those of `O = S2 \ S1`) can be moved right, making `[m, m')` covered by
//! `S1`: the opened runs get shorter (no dearer) and the closed ones longer, which costs nothing
//! until some closed run's length passes a multiple of 64 (`c` is constant on
//! `(64 (k - 1), 64 k]`, and `L` is a multiple of 64). So every change inside a piece sits at
//! the end of the piece (which is the next piece's boundary), at another change (they merge;
//! a run closed and reopened there merges, which subadditivity makes no dearer), or at a point
//! `m = s + 64 k` where `s` is the start of a run closed at `m`. If nothing closes, the change
//! moves to the piece's end; in a *free* piece any set is valid, so closes can also move to its
//! start and opens to its end: free pieces need no change points but their start. Run starts
//! are change points, so by induction every change point inside a needed piece `[p0, p1)` is
//! congruent mod 64 to `p0` or to the start of a run open at `p0`. The search tries all of
//! them: with at most 16 ranges there are at most `16 L / 64 = 3072` word steps of needed MSRs
//! per residue.
//!
//! # The program
//! A state is the set of open runs with their starts and the cost of the runs closed so far.
//! State `A` dominates `B` at position `x` when `cost(A) + sum pen(F) <= cost(B)`, where for
//! each family `F`: open in both with `A`'s run starting no earlier: 0; open in both, `A`'s
//! earlier: `c(s_B - s_A)` (subadditivity: `c(e - s_A) <= c(e - s_B) + c(s_B - s_A)`); open in
//! `A` only: `c(x - s_A)` (close it now); open in `B` only: 0 (`A` opens it now, a shorter
//! run). Then `A` can follow any future of `B` at no more cost, so dropping `B` keeps the
//! optimum. The program is exact unless a layer overflows [`MAX_STATES`], which
//! [`Solution::exact`] reports.

use crate::Action;

use super::{Class, Cost, Family, Geometry, Run, Solution, Target, MAX_RANGES};

/// Live states kept per change point.
pub(crate) const MAX_STATES: usize = 96;

#[derive(Clone, Debug)]
struct State {
    /// Bit `f` set: family `f` has an open run.
    open: u8,
    /// Start of each open run.
    starts: [u64; 3],
    /// Cost of the runs closed so far.
    cost: Cost,
    /// The ranges of the runs closed so far (the first 16).
    runs: heapless::Vec<Run, MAX_RANGES>,
}

type Layer = heapless::Vec<State, MAX_STATES>;

impl Geometry {
    /// `c(len)`: the cost of a run of `len` MSRs.
    fn run_cost(&self, len: u64) -> Cost {
        Cost {
            ranges: len.div_ceil(u64::from(self.max_nmsrs)) as u32,
            bytes: self.bytes(len),
        }
    }
}

impl Cost {
    fn plus(self, other: Cost) -> Cost {
        Cost {
            ranges: self.ranges.saturating_add(other.ranges),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// The most `ceil((e - a) / k) - ceil((e - b) / k)` can be for `e` in `[lo, hi]` (`lo` after
/// both `a` and `b`); for `a > b` a bound: `-floor((a - b) / k)`.
///
/// For `a <= b`, `d = b - a`: with `v = e - b`, the difference counts the multiples of `k` in
/// `[v, v + d)`, i.e. `floor(d / k)` plus one exactly when `(v - 1) mod k >= k - d mod k`.
fn step_gap(a: u64, b: u64, lo: u64, hi: u64, k: u64) -> i64 {
    if a > b {
        return -(((a - b) / k) as i64);
    }
    let d = b - a;
    let (whole, part) = ((d / k) as i64, d % k);
    if part == 0 {
        return whole;
    }
    let first = lo - b - 1; // the smallest v - 1
    let reaches = if hi - lo + 1 >= k {
        true
    } else {
        let r = first % k;
        r >= k - part || first + (k - part - r) < hi - b
    };
    whole + i64::from(reaches)
}

/// A bound on `c(e - a) - c(e - b)` for closing points `e` in `[lo, hi]`, per component.
fn run_gap(a: u64, b: u64, lo: u64, hi: u64, geo: Geometry) -> [i64; 2] {
    [
        step_gap(a, b, lo, hi, u64::from(geo.max_nmsrs)),
        i64::from(geo.word_bytes) * step_gap(a, b, lo, hi, u64::from(geo.word_bits)),
    ]
}

fn add(a: [i64; 2], b: [i64; 2]) -> [i64; 2] {
    [a[0] + b[0], a[1] + b[1]]
}

/// Whether `a` can follow every future of `b` from change point `at` at no more cost, in a
/// cluster whose runs all close by `end`: `a` keeps the runs both have open (its run from
/// `s_a` instead of `s_b` costs at most [`run_gap`] more, a negative amount when it starts
/// later), closes at `at` the runs only it has (`c(at - s_a)`), and opens at `at` the runs only
/// `b` has (a run from `at` instead of `s_b`, no dearer). If the sum of its cost and those
/// amounts is no more than `b`'s cost (compared as (ranges, bytes), after adding per component),
/// dropping `b` keeps the optimum.
fn dominates(a: &State, b: &State, at: u64, end: u64, geo: Geometry) -> bool {
    let mut t = [i64::from(a.cost.ranges), i64::from(a.cost.bytes)];
    for f in 0..3 {
        let bit = 1 << f;
        match (a.open & bit != 0, b.open & bit != 0) {
            (true, true) => t = add(t, run_gap(a.starts[f], b.starts[f], at, end, geo)),
            (true, false) => {
                let c = geo.run_cost(at - a.starts[f]);
                t = add(t, [i64::from(c.ranges), i64::from(c.bytes)]);
            }
            (false, true) => t = add(t, run_gap(at, b.starts[f], at, end, geo)),
            (false, false) => {}
        }
    }
    t <= [i64::from(b.cost.ranges), i64::from(b.cost.bytes)]
}

/// Adds `new` to `layer` unless a state there dominates it, dropping those it dominates.
/// Returns false when the layer was full and a state was lost.
fn insert(layer: &mut Layer, new: State, (at, end): (u64, u64), geo: Geometry) -> bool {
    if layer.iter().any(|s| dominates(s, &new, at, end, geo)) {
        return true;
    }
    layer.retain(|s| !dominates(&new, s, at, end, geo));
    match layer.push(new) {
        Ok(()) => true,
        Err(new) => {
            if let Some((worst, _)) = layer.iter().enumerate().max_by_key(|(_, s)| s.cost) {
                if new.cost < layer[worst].cost {
                    layer[worst] = new;
                }
            }
            false
        }
    }
}

/// Closes the run of family `f` at `end`: adds its cost and its ranges.
fn close(state: &mut State, f: usize, end: u64, geo: Geometry) {
    let start = state.starts[f];
    state.cost = state.cost.plus(geo.run_cost(end - start));
    state.open &= !(1 << f);
    let family = Family::ALL[f];
    let limit = u64::from(geo.max_nmsrs);
    let mut first = start;
    while first < end {
        let last = (first + limit).min(end) - 1;
        // Past 16 ranges the packing fails anyway; only the count matters then.
        let _ = state.runs.push(Run {
            family,
            first: first as u32,
            last: last as u32,
        });
        first += limit;
    }
}

/// Moves every state from `from` (at change point `at`, its set not yet chosen) to `to` (at
/// the next change point `next`): each may switch to any set `sets` allows (given its open
/// set), closing and opening runs at `at`.
fn step(
    from: &Layer,
    to: &mut Layer,
    (at, next, end): (u64, u64, u64),
    geo: Geometry,
    sets: impl Fn(u8) -> u8,
) -> bool {
    let mut exact = true;
    to.clear();
    for state in from.iter() {
        let allowed = sets(state.open);
        for set in 0u8..8 {
            if allowed & (1 << set) == 0 {
                continue;
            }
            let mut new = state.clone();
            for f in 0..3 {
                let bit = 1 << f;
                if state.open & bit != 0 && set & bit == 0 {
                    close(&mut new, f, at, geo);
                } else if state.open & bit == 0 && set & bit != 0 {
                    new.starts[f] = at;
                    new.open |= bit;
                }
            }
            exact &= insert(to, new, (next, end), geo);
        }
    }
    exact
}

/// The sets (as a mask over the 8 family sets) valid for a needed class.
fn valid_sets(class: Class) -> u8 {
    let mut mask = 0;
    for set in 1u8..8 {
        if class.allows(set) {
            mask |= 1 << set;
        }
    }
    mask
}

/// The search over one cluster, fed piece by piece.
struct Cluster {
    /// Where the cluster's last needed MSR ends: every run closes by then.
    end: u64,
    layer: Layer,
    spare: Layer,
    exact: bool,
}

impl Cluster {
    fn new(end: u64) -> Cluster {
        let mut layer = Layer::new();
        let _ = layer.push(State {
            open: 0,
            starts: [0; 3],
            cost: Cost::default(),
            runs: heapless::Vec::new(),
        });
        Cluster {
            end,
            layer,
            spare: Layer::new(),
            exact: true,
        }
    }

    fn advance(&mut self, at: u64, next: u64, geo: Geometry, sets: impl Fn(u8) -> u8) {
        self.exact &= step(
            &self.layer,
            &mut self.spare,
            (at, next, self.end),
            geo,
            sets,
        );
        core::mem::swap(&mut self.layer, &mut self.spare);
    }

    /// A free piece `[p0, p1)`: runs may close at its start.
    fn free(&mut self, p0: u64, p1: u64, geo: Geometry) {
        if p0 >= self.end {
            return; // past the cluster: its runs close at its end
        }
        // Every subset of the open set.
        self.advance(p0, p1, geo, |open| {
            let mut mask = 0u8;
            for set in 0u8..8 {
                if set & !open == 0 {
                    mask |= 1 << set;
                }
            }
            mask
        });
    }

    /// A needed piece `[p0, p1)` of `class`.
    fn needed(&mut self, p0: u64, p1: u64, class: Class, geo: Geometry) {
        let sets = valid_sets(class);
        let w = u64::from(geo.word_bits);
        // Residues (mod the word) of the change points inside the piece: the piece's start and
        // the starts of the runs open at it.
        let mut residues = 1u64 << (p0 % w);
        for s in self.layer.iter() {
            for f in 0..3 {
                if s.open & (1 << f) != 0 {
                    residues |= 1 << (s.starts[f] % w);
                }
            }
        }
        let mut at = p0;
        let mut block = p0 - p0 % w;
        while block < p1 {
            let mut bits = residues;
            while bits != 0 {
                let m = block + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                if m > at && m < p1 {
                    self.advance(at, m, geo, |_| sets);
                    at = m;
                }
            }
            block += w;
        }
        self.advance(at, p1, geo, |_| sets);
    }

    /// Closes every run at `end` and returns the cheapest state.
    fn finish(&self, end: u64, geo: Geometry) -> State {
        let mut best: Option<State> = None;
        for state in self.layer.iter() {
            let mut done = state.clone();
            for f in 0..3 {
                if done.open & (1 << f) != 0 {
                    close(&mut done, f, end, geo);
                }
            }
            if best.as_ref().is_none_or(|b| done.cost < b.cost) {
                best = Some(done);
            }
        }
        // The layer always holds a state: every needed piece admits all three families.
        best.unwrap_or(State {
            open: 0,
            starts: [0; 3],
            cost: Cost {
                ranges: u32::MAX / 2,
                bytes: 0,
            },
            runs: heapless::Vec::new(),
        })
    }
}

/// Calls `f(p0, p1, class)` for each maximal piece of one class, in order.
fn pieces(target: &dyn Target, default: Action, mut f: impl FnMut(u64, u64, Class)) {
    let end = target.end();
    let mut start = 0u64;
    let mut current: Option<(u64, Class)> = None;
    while start < end {
        let next = target.next_boundary(start);
        let class = Class::of(target, start as u32, default);
        match current {
            Some((_, c)) if c == class => {}
            Some((p0, c)) => {
                f(p0, start, c);
                current = Some((start, class));
            }
            None => current = Some((start, class)),
        }
        start = next;
    }
    if let Some((p0, c)) = current {
        f(p0, end, c);
    }
}

/// The end of the last needed MSR of the cluster whose first needed MSR is `p0`.
fn cluster_end(target: &dyn Target, default: Action, p0: u64, limit: u64) -> u64 {
    let mut last = p0;
    let mut x = p0;
    while x < target.end() {
        let next = target.next_boundary(x);
        let needed = Class::of(target, x as u32, default) != Class::Free;
        if x >= last + limit && (needed || x > p0) {
            break;
        }
        if needed {
            last = next;
        }
        x = next;
    }
    last
}

/// The lower bound of the module docs: the sum over clusters of `ceil(needed MSRs / L)`.
fn lower_bound(target: &dyn Target, geo: Geometry, default: Action) -> u64 {
    let limit = u64::from(geo.max_nmsrs);
    let mut bound = 0u64;
    let mut cluster: u64 = 0; // needed MSRs of the open cluster
    let mut last_need_end: Option<u64> = None;
    pieces(target, default, |p0, p1, class| {
        if class == Class::Free {
            return;
        }
        if last_need_end.is_some_and(|e| p0 - e >= limit) {
            bound += cluster.div_ceil(limit);
            cluster = 0;
        }
        cluster += p1 - p0;
        last_need_end = Some(p1);
    });
    bound + cluster.div_ceil(limit)
}

/// Searches the best packing of `target` with the given default action. When the lower bound
/// already exceeds `give_up` ranges, the search is skipped: the solution then has that bound as
/// its count, no runs, and `searched == false`.
pub(crate) fn solve(target: &dyn Target, geo: Geometry, default: Action, give_up: u32) -> Solution {
    let bound = lower_bound(target, geo, default);
    let lower = u32::try_from(bound).unwrap_or(u32::MAX);
    if bound > u64::from(give_up) {
        return Solution {
            cost: Cost {
                ranges: lower,
                bytes: 0,
            },
            runs: heapless::Vec::new(),
            exact: false,
            searched: false,
            lower,
        };
    }
    let limit = u64::from(geo.max_nmsrs);
    let mut total = Solution {
        cost: Cost::default(),
        runs: heapless::Vec::new(),
        exact: true,
        searched: true,
        lower,
    };
    let mut cluster: Option<Cluster> = None;
    let mut last_need_end = 0u64;
    let finish = |c: &Cluster, end: u64, total: &mut Solution| {
        let best = c.finish(end, geo);
        total.cost = total.cost.plus(best.cost);
        total.exact &= c.exact;
        for run in best.runs {
            let _ = total.runs.push(run);
        }
    };
    pieces(target, default, |p0, p1, class| {
        if class == Class::Free {
            if let Some(c) = cluster.as_mut() {
                c.free(p0, p1, geo);
            }
            return;
        }
        if cluster.is_some() && p0 - last_need_end >= limit {
            if let Some(c) = cluster.take() {
                finish(&c, last_need_end, &mut total);
            }
        }
        let c =
            cluster.get_or_insert_with(|| Cluster::new(cluster_end(target, default, p0, limit)));
        c.needed(p0, p1, class, geo);
        last_need_end = p1;
    });
    if let Some(c) = cluster.take() {
        finish(&c, last_need_end, &mut total);
    }
    if total.cost.ranges == 0 && default == Action::Deny {
        // The kernel refuses DEFAULT_DENY without ranges: add one that denies MSR 0, which the
        // intent denies anyway (nothing differs from the default).
        total.cost = geo.run_cost(1);
        let _ = total.runs.push(Run {
            family: Family::Both,
            first: 0,
            last: 0,
        });
    }
    total
}
