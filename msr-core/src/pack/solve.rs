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
//! moves to the piece's end. In a *free* piece any set is valid, so its closes move to its
//! start and its opens to its end: a free gap needs no change point; the next needed piece's
//! first change point closes runs at the gap's start (possibly restarting a family there: a
//! run closed at the gap's start and another opened after it). Run starts are change points,
//! so by induction every change point inside a needed piece `[p0, p1)` is congruent mod 64 to
//! `p0` or to the start of a run open at `p0`. The search tries all of them: the search runs
//! only below a lower bound of 64 ranges, so there are at most `64 L / 64` word steps of
//! needed MSRs per residue; past [`INTERIOR_BUDGET`] change points in one cluster (counting
//! only points strictly inside a needed piece: a piece of one MSR has none), pieces are tried
//! at their ends only (still exact, not proven minimal).
//!
//! # The program
//! A state, at a change point `x` before the set from `x` on is chosen, is the set of open runs
//! with their starts and the cost of the runs closed so far. Every run of the cluster closes
//! by the cluster's end `E`. State `A` can follow any future of state `B` at no more cost when
//! `cost(A) + sum over families of pen(F) <= cost(B)`, where: `F` open in both: the most
//! `c(e - s_A) - c(e - s_B)` can be for a closing point `e` in `[x, E]` (computed exactly per
//! component from quotients and remainders, negative when `A`'s run starts later); open in `A`
//! only: `c(x - s_A)` (`A` closes it at `x`); open in `B` only: the most `c(e - x) - c(e - s_B)`
//! can be (`A` opens it at `x`). Costs add per component and compare as (ranges, bytes), so the
//! sum bounds `A`'s cost in every future; dropping `B` keeps the optimum. The program is exact
//! unless a layer overflows [`MAX_STATES`], which [`Solution::exact`] reports. Layers hold a
//! handful of states for clusters narrower than one range; dense mixed clusters wider than one
//! range need a hundred or more (read-only and write-only MSRs interleaved over 0x5000 MSRs:
//! up to 140; runs of mixed access over 0x5000 MSRs: up to 186), since runs of the same
//! families started at different points are each cheaper in some futures, and denser or wider
//! ones (over 0x8000 MSRs: 200 to 500) can need more than a layer holds.
//!
//! # A bound for any cluster
//! When a layer overflows, the program's answer is an upper bound only; a lower bound that
//! meets it still proves the *number of ranges* minimal (not the bytes: see below). Take any
//! packing and keep, for one cluster, the ranges that cover one of its needed MSRs (a range
//! covers at most `L` MSRs and cannot reach two clusters; dropping the others leaves every
//! needed MSR of the cluster served), cut to `[first, end)` (the cluster's first needed MSR,
//! the end of its last). With `runs` the maximal runs of those ranges per family and `cov`
//! the MSRs they cover counted once per family, for any weight `0 <= lambda <= 1`:
//!
//! `ranges >= sum over ranges of (lambda + (1 - lambda) * len / L) >= lambda * runs + (1 -
//! lambda) * cov / L`,
//!
//! since a range's `len <= L`, a run holds at least one range, and each MSR a family covers
//! lies in one of its ranges at least. The right side depends only on the set `S(x)` of families covering
//! each MSR `x`: `cov = sum |S(x)|`, and `runs` counts the pairs `(x, f)` with `f` in `S(x)`
//! and not in `S(x - 1)` (`S(first - 1)` empty), and `S(x)` must serve `x`'s class. So the
//! least value of `lambda * opens + (1 - lambda) * cov / L` over all such sequences bounds the
//! cluster's ranges from below, and so does its ceiling (ranges are whole).
//!
//! That least value is a shortest path with the set as state, and within a piece of one class
//! (needed, or a free gap, where any set is allowed) the set can be taken constant: a path
//! through sets `T_1 .. T_k` held for `n_1 .. n_k` MSRs (`n_1 + .. + n_k` the piece's length)
//! costs an amount linear in the `n_j`, no less than at one vertex `n_j = n` (all others 0),
//! and there the blocks held for no MSR only add openings, since `|A \ C| <= |A \ B| + |B \ C|`
//! (also for the first set of the next piece). With a constant set per piece, a family open
//! on both sides of a gap of `g` MSRs either covers it (`g` more coverage) or opens again (one
//! more run); one opened after a gap opens (one run); one closed in it costs nothing more. The
//! program over the pieces keeps the least cost per set (8 states, 64 moves per piece), in
//! units of `1 / (SCALE * L)` with `lambda = a / SCALE`. The least cost is a minimum of
//! functions linear in `lambda`, so concave: a ternary search finds a good weight (any weight
//! gives a sound bound; weight 0 is `ceil(needed MSRs / L)`, weight 1 counts the runs).
//!
//! It is computed only for clusters whose search was not exact (in time linear in the pieces
//! per weight tried, some 40), and meets the packing found for the dense mixed clusters of
//! about 0x8000 MSRs that overflow layers (read-only and write-only MSRs alternating, runs of
//! mixed access): two families over nearly the whole span cost `2 * span / L` of coverage, and
//! leaving either costs a run per change of class. It loses the rounding of `ceil(len / L)`
//! per run, so over 0x10000 MSRs it gives 11 where 12 are found; the next section keeps most of
//! that rounding. Neither says anything about the bytes of packings with that many ranges: only
//! the count of ranges is proven ([`Solution::lower`]); the section after proves the bytes
//! where it can.
//!
//! # A bound that keeps the rounding
//! Cut `L` into `P` grid steps of `G = L / P` MSRs (`P` the largest divisor of `L` up to 16:
//! 16 for the kernel, `G` = 768); the *grid points* are the multiples of `G`, and `up(s)` is
//! the first grid point at or after `s`. A run `[s, e)` needs `ceil((e - s) / L) = 1 + #{k >=
//! 1 : s + k L < e}` ranges, which is at least its *charges*: `1 + #{k >= 1 : up(s) + k L <
//! e}` (`up(s) >= s`). The charges count the opening, then one for each grid point the run
//! covers after `up(s)` that is congruent to `up(s)` mod `L`: a run's cost is charged at
//! grid points of its *phase* `up(s) mod L`, one of `P` values, and nowhere else.
//!
//! Take any packing, cut to one cluster as in the previous section, and the *steps* of the
//! cluster: the start of each needed piece and each grid point in `[first, end)`, in order (a
//! free piece's start is no step unless it is a grid point). Map the packing to a sequence of
//! sets, one per step: `T(a)` = the families covering MSR `a`, which serves `a`'s class. Per
//! family `f`, a maximal stretch of consecutive steps with `f` in `T(a)`, all covered by the
//! same run `[s, e)` of the packing, is one *run of the sequence*, opened at its first step
//! `a0` and charged at each of its steps that is a grid point `up(a0) + k L`, `k >= 1`.
//! Distinct runs of the sequence map to distinct runs of the packing (a run of the packing
//! covers consecutive steps), and a run of the sequence has no more charges than the packing's
//! run has ranges: it opens once, and its other charges are at grid points `up(a0) + k L`
//! that the packing's run covers, so below `e`, with `up(a0) >= up(s)` (the run covers
//! `a0`, so `s <= a0`): at most `#{k >= 1 : up(s) + k L < e}` of them.
//!
//! So the least charges of a sequence of valid sets, one per step, with runs opened at steps,
//! bound the cluster's ranges from below. That least value is a program over the steps whose
//! state gives, per family, closed, *pending* (opened after the last grid point: its phase is
//! that of the next grid point, which charges it nothing) or a phase: at step `a`, a family
//! closes (free), stays, or opens (1; also when one is open, which starts a new run), pending,
//! or with `a`'s phase when `a` is a grid point (`up(a0) = a0`); at a grid point `a`, a family
//! that stays is charged 1 if its phase is `a`'s, and a pending one takes `a`'s phase, free;
//! then the sets the class of `a` does not allow are dropped. At
//! most `(P + 2)^3` states (5,832 bytes for `P` = 16), each step a few passes over them:
//! about 10 ms for a cluster of 0x10000 MSRs (some 2,000 steps).
//!
//! The quantization loses less than `G` MSRs per run. Over the mixed clusters of 0x10000 MSRs
//! (runs of mixed access, seeds 1 to 3 of the tests) it gives 12, the count the search finds,
//! which proves that count. It is computed with the relaxation of the previous section, for the
//! same clusters, and [`settle`] takes the larger.
//!
//! # Pruning
//! The first search of a cluster stops at its first overflow. A cluster spanning `2 L` MSRs or
//! more (from its first needed MSR to the end of its last) skips it: dense ones overflow, and
//! it took a third of their time (the bounds above take some 20 ms over 0x10000 MSRs). The
//! cluster is then searched again, or first (`refine`), dropping every state that a proven
//! bound (below) shows needs more than `R` ranges in every future, with `R` the larger of the
//! two bounds above. If no layer of that search overflows, it is exact for the packings of at
//! most `R` ranges: the states on the path of a cheapest one are not dropped by the bound, and
//! a state that dominates one of them has a future no dearer, so it is not dropped either
//! (dominance and the rest of the program are unchanged). So it finds the minimum when the
//! minimum has at most `R` ranges, and when it finds none within `R`, the cluster needs more
//! (a cluster that skipped the first search runs it then; it stands if exact). If a layer of it
//! overflows, it goes on, keeping the cheapest states of full layers and trying pieces at their
//! ends only; a packing of `R` ranges found so has the fewest ranges (`R` is a lower bound) and
//! stands, its bytes unproven. Otherwise the whole search runs, likewise (its layers overflow
//! where the first search's did, so it is not exact anyway; trying pieces at their ends only
//! takes a tenth of the time on the clusters of 0x10000 MSRs, for packings as cheap), and then,
//! if that packing has more than `R` ranges, a search pruned against its ranges (the minimum
//! has no more, so the same argument applies; with `R` or fewer it would repeat the first
//! pruned search), which stops at its first overflow; the packing found then stands, unproven.
//!
//! The bound of a state at change point `x`, weighed with `lambda` (any in `[0, 1]` is sound;
//! 1 / 16 prunes well): its closed ranges; for each open run, started `d = k L + rho` MSRs
//! before `x` (`0 < rho <= L`), `k + lambda + (1 - lambda) rho / L`: closed at any `e >= x` it
//! costs `k + ceil(z)` ranges with `z = (rho + e - x) / L > 0`, and `ceil(z) >= max(1, z) >=
//! lambda + (1 - lambda) z`; and the relaxation of the previous section over `[x, E)`, with the
//! state's open set taken as open before `x`: a run continuing is charged its coverage from `x`
//! on (its opening and the coverage before `x` are in the term above), a run opened from `x` on
//! costs what the relaxation charges for it at least, and a run closed at `x` costs no less
//! than the term above (`ceil(rho / L) = 1`). The sum, rounded up, bounds the ranges of every
//! future; the state is dropped when it exceeds `R`. The relaxed cost of the rest is a program
//! over the pieces from the cluster's end back, per set held on a piece (8 values per piece,
//! `relax_piece`; inside a piece, the set is constant from `x` to the piece's end, as in the
//! previous section). It is kept for the first piece of each of up to 128 blocks and recomputed
//! for the block the search is in, so clusters of up to 32,768 needed pieces are refined, in
//! 16 KiB. On the mixed clusters over 0x8000 MSRs whose layers overflowed, the search pruned
//! against the relaxation's bound keeps every layer within [`MAX_STATES`] (at most 104 to 179
//! states, measured with weights 1 / 20 to 1 / 7) and is exact: ranges and bytes are proven.
//! Over 0x10000 MSRs the bounds prove 12 ranges, but the search pruned against 12 overflows a
//! third of the way in; it goes on to a packing of 12: the count is proven, the bytes are not.
//!
//! # Memory
//! A state is its key and the end of a list of the ranges it closed in a [`Trail`] shared by
//! the states of both layers (64 bytes, where a state carrying its 16 ranges took 288), so
//! that 256 states fit in two layers of 16 KiB and a trail of 32 KiB. The trail forgets the
//! ranges no state reaches when it fills; it cannot fill with the ranges of one layer alone,
//! so a step always keeps a state.

use crate::Action;

use super::phase::Phases;
use super::{Class, Cost, Family, Geometry, Run, Solution, Target, MAX_RANGES};

/// Live states kept per change point: a layer takes 16 KiB (states of 64 bytes).
pub(crate) const MAX_STATES: usize = 256;

/// Closed ranges the [`Trail`] holds (32 KiB): those of a full layer, 16 per state, even if
/// they share none.
const TRAIL: usize = MAX_RANGES * MAX_STATES;

/// No range: the end of a list in the [`Trail`].
const NONE: u32 = u32::MAX;

/// A position with its quotient and remainder by the range limit `L` (index 0) and by the
/// bitmap word (index 1), so that the dominance test needs no division.
#[derive(Clone, Copy, Debug, Default)]
struct Pos {
    index: u32,
    q: [u32; 2],
    r: [u16; 2],
}

impl Pos {
    fn new(at: u64, geo: Geometry) -> Pos {
        let k = geo.moduli();
        // Positions are at most 2^32 - 1 (targets end there), the moduli at most `L`
        // (0x3000): the position, quotients and remainders fit.
        debug_assert!(at <= u64::from(u32::MAX) && k[0] <= 1 << 16 && k[1] <= 1 << 16);
        Pos {
            index: at as u32,
            q: [(at / k[0]) as u32, (at / k[1]) as u32],
            r: [(at % k[0]) as u16, (at % k[1]) as u16],
        }
    }

    fn at(&self) -> u64 {
        u64::from(self.index)
    }
}

/// What the program compares of a state.
#[derive(Clone, Copy, Debug)]
struct Key {
    /// Bit `f` set: family `f` has an open run.
    open: u8,
    /// How many ranges the state has closed, at most 16 (kept here, where the key has room
    /// for it).
    closed: u8,
    /// The most ranges a state that dominates this one can have closed (see [`admit`]).
    reach: u16,
    /// Start of each open run.
    starts: [Pos; 3],
    /// Cost of the runs closed so far.
    cost: Cost,
}

#[derive(Clone, Copy, Debug)]
struct State {
    key: Key,
    /// The newest of the ranges of the runs closed so far (the first 16, `key.closed` of
    /// them) in the [`Trail`], or [`NONE`].
    last: u32,
}

impl State {
    /// A state with no run open and nothing paid, whose closed ranges end at `last`.
    fn start(last: u32) -> State {
        State {
            key: Key {
                open: 0,
                closed: 0,
                reach: 0,
                starts: [Pos::default(); 3],
                cost: Cost::default(),
            },
            last,
        }
    }
}

/// The ranges the states have closed, shared: a state's ranges are a list through the trail
/// from its newest one ([`State::last`]) back to its oldest, so that a state takes 64 bytes and
/// ranges that many states share are stored once. A full trail drops the entries no state of
/// the two layers reaches and moves the others down, in order (a parent stays before its
/// children). If that frees too little room for a state's new ranges, the dearest states of the
/// layer being built are dropped until it does (the layer is then no longer exact): with none
/// left, the ranges of the other layer's states, at most 16 each, and the new ones (at most 16
/// with those of the state's parent) fit in [`TRAIL`].
struct Trail {
    /// Each range in a `u64`: its first MSR in bits 0..32, the MSRs after it in bits 32..46
    /// (fewer than `L`, at most 2^14), its family in bits 46..48, its parent (the range closed
    /// before it, `0xffff` for none) in bits 48..64.
    entries: [u64; TRAIL],
    len: usize,
}

/// No parent, in [`Trail::entries`].
const NO_PARENT: u64 = 0xffff;

// A range's length less one and a parent's place fit their bits.
const _: () = assert!(crate::abi::MAX_NMSRS <= 1 << 14 && TRAIL < NO_PARENT as usize);

impl Trail {
    fn new() -> Trail {
        Trail {
            entries: [0; TRAIL],
            len: 0,
        }
    }

    fn room(&self) -> usize {
        TRAIL - self.len
    }

    fn parent(&self, i: usize) -> u32 {
        match self.entries[i] >> 48 {
            NO_PARENT => NONE,
            p => p as u32,
        }
    }

    /// Records `run` after the list ending at `last` and returns the new end. Needs room.
    fn push(&mut self, last: u32, run: Run) -> u32 {
        debug_assert!(run.last - run.first < 1 << 14);
        let parent = if last == NONE {
            NO_PARENT
        } else {
            u64::from(last)
        };
        let at = self.len;
        self.entries[at] = u64::from(run.first)
            | u64::from(run.last - run.first) << 32
            | (run.family as u64) << 46
            | parent << 48;
        self.len += 1;
        at as u32
    }

    /// The ranges of the list ending at `last`, oldest first.
    fn runs(&self, mut last: u32) -> heapless::Vec<Run, MAX_RANGES> {
        let mut newest_first: heapless::Vec<Run, MAX_RANGES> = heapless::Vec::new();
        while let Some(&v) = self.entries.get(last as usize) {
            if newest_first.is_full() {
                break;
            }
            let first = v as u32;
            let _ = newest_first.push(Run {
                family: Family::ALL[((v >> 46) & 3) as usize],
                first,
                last: first + ((v >> 32) & ((1 << 14) - 1)) as u32,
            });
            last = self.parent(last as usize);
        }
        newest_first.reverse();
        newest_first
    }

    /// Drops the entries no state of `layers` reaches.
    fn collect(&mut self, layers: [&mut Layer; 2]) {
        let mut live = [0u64; TRAIL / 64];
        for layer in &layers {
            for state in layer.iter() {
                let mut i = state.last as usize;
                while i < TRAIL && live[i / 64] & (1 << (i % 64)) == 0 {
                    live[i / 64] |= 1 << (i % 64);
                    i = self.parent(i) as usize;
                }
            }
        }
        // The new place of a live entry: the live entries before it.
        let mut before = [0u32; TRAIL / 64];
        let mut count = 0;
        for (b, word) in before.iter_mut().zip(live) {
            *b = count;
            count += word.count_ones();
        }
        let moved = |i: u32| match i as usize {
            i if i < TRAIL => before[i / 64] + (live[i / 64] & ((1 << (i % 64)) - 1)).count_ones(),
            _ => NONE,
        };
        for i in 0..self.len {
            if live[i / 64] & (1 << (i % 64)) != 0 {
                let parent = match moved(self.parent(i)) {
                    NONE => NO_PARENT,
                    p => u64::from(p),
                };
                let to = moved(i as u32) as usize;
                self.entries[to] = self.entries[i] & ((1 << 48) - 1) | parent << 48;
            }
        }
        self.len = count as usize;
        for layer in layers {
            for state in layer.iter_mut() {
                state.last = moved(state.last);
            }
        }
    }
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

impl Geometry {
    /// The two granularities of `c`: the range limit and the bitmap word.
    fn moduli(&self) -> [u64; 2] {
        [u64::from(self.max_nmsrs), u64::from(self.word_bits)]
    }
}

/// The most `ceil((e - a) / k) - ceil((e - b) / k)` can be for `e` in `[lo, hi]` (`lo` after
/// both `a` and `b`); for `a > b` a bound: `-floor((a - b) / k)`. `k` is modulus `m` of the
/// geometry; the quotients and remainders come with the positions.
///
/// For `a <= b`, `d = b - a`: with `v = e - b`, the difference counts the multiples of `k` in
/// `[v, v + d)`, i.e. `floor(d / k)` plus one exactly when `(v - 1) mod k >= k - d mod k`.
fn step_gap(a: &Pos, b: &Pos, lo: &Pos, hi: u64, m: usize, k: u64) -> i64 {
    // floor((x - y) / k) and (x - y) mod k for x >= y, from quotients and remainders.
    let split = |x: &Pos, y: &Pos| -> (u64, u64) {
        let (xq, yq, xr, yr) = (
            u64::from(x.q[m]),
            u64::from(y.q[m]),
            u64::from(x.r[m]),
            u64::from(y.r[m]),
        );
        if xr >= yr {
            (xq - yq, xr - yr)
        } else {
            (xq - yq - 1, xr + k - yr)
        }
    };
    if a.at() > b.at() {
        return -(split(a, b).0 as i64);
    }
    let (whole, part) = split(b, a);
    if part == 0 {
        return whole as i64;
    }
    let first = lo.at() - b.at() - 1; // the smallest v - 1
    let reaches = if hi - lo.at() + 1 >= k {
        true
    } else {
        // first mod k
        let r = match split(lo, b).1 {
            0 => k - 1,
            r => r - 1,
        };
        r >= k - part || first + (k - part - r) < hi - b.at()
    };
    whole as i64 + i64::from(reaches)
}

/// Whether `a` can follow every future of `b` from change point `at` at no more cost, in a
/// cluster whose runs all close by `end`: `a` keeps the runs both have open (its run from
/// `s_a` instead of `s_b` costs at most [`step_gap`] more per component, a negative amount when it starts
/// later), closes at `at` the runs only it has (`c(at - s_a)`), and opens at `at` the runs only
/// `b` has (a run from `at` instead of `s_b`, no dearer). If the sum of its cost and those
/// amounts is no more than `b`'s cost (compared as (ranges, bytes), after adding per component),
/// dropping `b` keeps the optimum.
fn dominates(a: &Key, b: &Key, at: &Pos, end: u64, geo: Geometry) -> bool {
    // Ranges first: they decide unless equal (the order is lexicographic).
    let mut ranges = i64::from(a.cost.ranges);
    let k = geo.moduli();
    for f in 0..3 {
        let bit = 1 << f;
        ranges += match (a.open & bit != 0, b.open & bit != 0) {
            (true, true) => step_gap(&a.starts[f], &b.starts[f], at, end, 0, k[0]),
            (true, false) => i64::from(geo.run_cost(at.at() - a.starts[f].at()).ranges),
            (false, true) => step_gap(at, &b.starts[f], at, end, 0, k[0]),
            (false, false) => 0,
        };
    }
    let limit = i64::from(b.cost.ranges);
    if ranges != limit {
        return ranges < limit;
    }
    let mut bytes = i64::from(a.cost.bytes);
    let word = i64::from(geo.word_bytes);
    for f in 0..3 {
        let bit = 1 << f;
        bytes += match (a.open & bit != 0, b.open & bit != 0) {
            (true, true) => word * step_gap(&a.starts[f], &b.starts[f], at, end, 1, k[1]),
            (true, false) => i64::from(geo.run_cost(at.at() - a.starts[f].at()).bytes),
            (false, true) => word * step_gap(at, &b.starts[f], at, end, 1, k[1]),
            (false, false) => 0,
        };
    }
    bytes <= i64::from(b.cost.bytes)
}

/// Whether a state of `layer` dominates `key`; if not, drops those `key` dominates and makes
/// room for it. Returns (whether to insert, whether the layer stayed exact).
///
/// A state `a` dominates `b` only if `a`'s ranges plus one per family open in `a` only are at
/// most `b`'s ranges plus, over `b`'s open runs, `floor((x - s_B) / L)`: each family's amount
/// in [`dominates`] is at least minus that (a run of `a` starting later, or opened at `x`,
/// saves no more), and a family open in `a` only costs `c(x - s_A)`, at least one range (every
/// state's runs start before the change point `x` they are admitted at). The right side is
/// `b`'s `reach`; the test skips only comparisons that fail (most of them).
///
/// Whether a state dominates `key` does not depend on the order the layer is searched in. It
/// looks first at `hint`, the state that dominated a candidate last (the candidates of one state
/// come one after another, and one state often dominates several), then from the newest state
/// back; it sets `hint` to the state found. On the alternating read-only and write-only MSRs
/// over 0x10000 MSRs (`tests/shapes`), this and the family count above cut the comparisons from
/// 2.5 to 0.9 billion.
fn admit(
    layer: &mut Layer,
    key: &mut Key,
    (at, end): (&Pos, u64),
    geo: Geometry,
    hint: &mut usize,
) -> (bool, bool) {
    let mut reach = u64::from(key.cost.ranges);
    for f in 0..3 {
        if key.open & (1 << f) != 0 {
            reach += (at.at() - key.starts[f].at()) / u64::from(geo.max_nmsrs);
        }
    }
    key.reach = u16::try_from(reach).unwrap_or(u16::MAX);
    let may = |a: &Key, b: &Key| {
        a.cost
            .ranges
            .saturating_add((a.open & !b.open).count_ones())
            <= u32::from(b.reach)
    };
    let by = |s: &State| may(&s.key, key) && dominates(&s.key, key, at, end, geo);
    if layer.get(*hint).is_some_and(by) {
        return (false, true);
    }
    if let Some(i) = layer.iter().rposition(by) {
        *hint = i;
        return (false, true);
    }
    layer.retain(|s| !(may(key, &s.key) && dominates(key, &s.key, at, end, geo)));
    if !layer.is_full() {
        return (true, true);
    }
    // Full: keep the cheaper of the new state and the worst one.
    if let Some((worst, _)) = layer.iter().enumerate().max_by_key(|(_, s)| s.key.cost) {
        if key.cost < layer[worst].key.cost {
            layer.swap_remove(worst);
            return (true, false);
        }
    }
    (false, false)
}

/// The ranges of a run of family `f` over `[start, end)`, cut every `L` MSRs from its start.
fn for_ranges(f: usize, start: u64, end: u64, geo: Geometry, mut each: impl FnMut(Run)) {
    let family = Family::ALL[f];
    let limit = u64::from(geo.max_nmsrs);
    let mut first = start;
    while first < end {
        let last = (first + limit).min(end) - 1;
        each(Run {
            family,
            first: first as u32,
            last: last as u32,
        });
        first += limit;
    }
}

/// Moves every state from `from` (at change point `at`, its set not yet chosen) to `to` (at
/// the next change point `next`): each may switch to any set `sets` allows (given its open
/// set), closing runs at `close_at` (`at`, or the start of the free gap before it) and opening
/// runs at `at`.
fn step(
    (from, to, trail): (&mut Layer, &mut Layer, &mut Trail),
    (close_at, at, next, end): (u64, u64, u64, u64),
    geo: Geometry,
    sets: impl Fn(u8) -> u8,
    prune: Option<&Suffix>,
) -> bool {
    let mut exact = true;
    to.clear();
    let (open_at, next) = (Pos::new(at, geo), Pos::new(next, geo));
    // The state of `to` that dominated a candidate last (see `admit`).
    let mut hint = 0;
    for i in 0..from.len() {
        let state = from[i];
        let allowed = sets(state.key.open);
        let old = state.key.open;
        // Keeping the open set first: it is the likeliest to dominate the other candidates,
        // which are then dropped at the first comparison.
        for k in 0u8..8 {
            let set = k ^ old;
            if allowed & (1 << set) == 0 {
                continue;
            }
            // Runs kept in the set may also end at `close_at` and start again at `at`, when a
            // free gap lies between. Not worth trying when the run, kept to the cluster's end,
            // needs no more ranges than its part before the gap: the restart costs a range more
            // than that, whatever follows.
            let mut restartable = 0;
            if close_at < at {
                let limit = u64::from(geo.max_nmsrs);
                for f in 0..3 {
                    let start = state.key.starts[f].at();
                    if old & set & (1 << f) != 0
                        && (end - start).div_ceil(limit) > (close_at - start).div_ceil(limit)
                    {
                        restartable |= 1 << f;
                    }
                }
            }
            let mut restart = restartable;
            loop {
                let closing = old & !(set & !restart);
                let opening = set & !(old & !restart);
                let mut key = state.key;
                for f in 0..3 {
                    let bit = 1 << f;
                    if closing & bit != 0 {
                        key.cost = key.cost.plus(geo.run_cost(close_at - key.starts[f].at()));
                    }
                    if opening & bit != 0 {
                        key.starts[f] = open_at;
                    }
                }
                key.open = set;
                if prune.is_some_and(|p| p.cannot_reach(&key, next.at(), geo)) {
                    // Every packing through this state needs more ranges than pruned against.
                    if restart == 0 {
                        break;
                    }
                    restart = (restart - 1) & restartable;
                    continue;
                }
                let (insert, kept_all) = admit(to, &mut key, (&next, end), geo, &mut hint);
                exact &= kept_all;
                if insert {
                    // The ranges the state closes here, past 16 uncounted: the packing fails
                    // then anyway, and only the cost matters.
                    let limit = u64::from(geo.max_nmsrs);
                    let mut need = 0;
                    for f in 0..3 {
                        if closing & (1 << f) != 0 {
                            need += (close_at - state.key.starts[f].at()).div_ceil(limit);
                        }
                    }
                    let need = need.min(MAX_RANGES as u64 - u64::from(key.closed)) as usize;
                    if need > trail.room() {
                        trail.collect([&mut *from, &mut *to]);
                    }
                    while need > trail.room() {
                        // Rare: the dearest states being built make room (see `Trail`).
                        exact = false;
                        let worst = to.iter().enumerate().max_by_key(|(_, s)| s.key.cost);
                        let Some((worst, _)) = worst else { break };
                        to.swap_remove(worst);
                        trail.collect([&mut *from, &mut *to]);
                    }
                    if need <= trail.room() {
                        // `collect` may have moved the state's ranges.
                        let mut next = State {
                            key,
                            last: from[i].last,
                        };
                        for f in 0..3 {
                            if closing & (1 << f) != 0 {
                                let start = state.key.starts[f].at();
                                for_ranges(f, start, close_at, geo, |run| {
                                    if usize::from(next.key.closed) < MAX_RANGES {
                                        next.last = trail.push(next.last, run);
                                        next.key.closed += 1;
                                    }
                                });
                            }
                        }
                        let _ = to.push(next);
                    }
                }
                if restart == 0 {
                    break;
                }
                restart = (restart - 1) & restartable;
            }
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
    /// The cluster's first needed MSR.
    first: u64,
    /// Where the cluster's last needed MSR ends: every run closes by then.
    end: u64,
    /// The current layer and the one being built (flipped, never moved: each is 16 KiB).
    layers: [Layer; 2],
    /// The ranges the states of both layers have closed.
    trail: Trail,
    current: usize,
    exact: bool,
    /// What the search does once it is no longer exact (see `settle`).
    mode: Mode,
    /// The end of the last needed piece so far.
    last_end: u64,
    /// Change points inside pieces the cluster may still try (see [`INTERIOR_BUDGET`]).
    budget: u64,
    /// Whether the first search was skipped (a wide cluster, see `settle`).
    skipped: bool,
}

/// Clusters spanning this many ranges' reach (`WIDE * L` MSRs from the first needed one to the
/// end of the last) or more skip the first search, which stops at its first overflow, and are
/// searched pruned against their lower bound first (see `settle`).
const WIDE: u64 = 2;

/// What a cluster's search does when a layer overflows (see `settle`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// It stops: a search that is no longer exact proves nothing.
    Stop,
    /// It goes on, keeping the cheapest states of full layers and trying pieces at their ends
    /// only from there.
    GoOn,
    /// It tries pieces at their ends only from the start (the whole search, whose layers
    /// overflow where the first search's did).
    EndsOnly,
}

/// Change points inside needed pieces one cluster may try. Typical policies need a few per
/// long piece and none per piece of one MSR, however many; a policy with long needed pieces
/// after many runs of distinct residues could need hundreds of thousands, and past this budget
/// a piece is tried at its ends only: the filter stays exact, [`Solution::exact`] becomes
/// false.
const INTERIOR_BUDGET: u64 = 1 << 16;

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            first: 0,
            end: 0,
            layers: [Layer::new(), Layer::new()],
            trail: Trail::new(),
            current: 0,
            exact: true,
            last_end: 0,
            budget: INTERIOR_BUDGET,
            mode: Mode::Stop,
            skipped: false,
        }
    }

    /// Starts a cluster whose needed MSRs start at `first` and end at `end`, searched in `mode`.
    fn reset(&mut self, first: u64, end: u64, mode: Mode) {
        self.mode = mode;
        self.first = first;
        self.end = end;
        self.exact = true;
        self.current = 0;
        self.last_end = first;
        self.budget = INTERIOR_BUDGET;
        self.skipped = false;
        self.layers[1].clear();
        self.layers[0].clear();
        self.trail.len = 0;
        let _ = self.layers[0].push(State::start(NONE));
    }

    fn layer(&self) -> &Layer {
        &self.layers[self.current]
    }

    fn advance(
        &mut self,
        (close_at, at, next): (u64, u64, u64),
        geo: Geometry,
        sets: impl Fn(u8) -> u8,
        prune: Option<&Suffix>,
    ) {
        if self.mode == Mode::Stop && !self.exact {
            // A search that is no longer exact proves nothing: it stops (see `settle`).
            return;
        }
        let [first, second] = &mut self.layers;
        let (from, to) = if self.current == 0 {
            (first, second)
        } else {
            (second, first)
        };
        let layers = (from, to, &mut self.trail);
        self.exact &= step(layers, (close_at, at, next, self.end), geo, sets, prune);
        self.current ^= 1;
    }

    /// A needed piece `[p0, p1)` of `class`. A free gap before it needs no step of its own:
    /// runs that end in it close at its start (the end of the last needed piece), which is
    /// never dearer than closing later, and runs open only at a needed piece.
    fn needed(&mut self, p0: u64, p1: u64, class: Class, geo: Geometry, prune: Option<&Suffix>) {
        let sets = valid_sets(class);
        let w = u64::from(geo.word_bits);
        // Residues (mod the word) of the change points inside the piece: the piece's start and
        // the starts of the runs open at it.
        let mut residues = 1u64 << (p0 % w);
        for s in self.layer().iter() {
            for f in 0..3 {
                if s.key.open & (1 << f) != 0 {
                    residues |= 1 << s.key.starts[f].r[1];
                }
            }
        }
        // The budget pays for the change points tried: those strictly inside the piece with one
        // of the residues (none in a piece of one MSR).
        let mut points = 0;
        let mut bits = residues;
        while bits != 0 {
            let r = u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            // The points below `b` congruent to `r` number `ceil((b - r) / w)`.
            let below = |b: u64| (b + w - 1 - r) / w;
            points += below(p1) - below(p0 + 1);
        }
        let coarse = match self.mode {
            Mode::Stop => false,
            Mode::GoOn => !self.exact,
            Mode::EndsOnly => true,
        };
        if points > self.budget || (coarse && points > 0) {
            residues = 0;
            self.exact = false;
        } else {
            self.budget -= points;
        }
        let mut close_at = self.last_end;
        let mut at = p0;
        let mut block = p0 - p0 % w;
        while block < p1 && residues != 0 {
            let mut bits = residues;
            while bits != 0 {
                let m = block + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                if m > at && m < p1 {
                    self.advance((close_at, at, m), geo, |_| sets, prune);
                    (close_at, at) = (m, m);
                }
            }
            block += w;
        }
        self.advance((close_at, at, p1), geo, |_| sets, prune);
        self.last_end = p1;
    }

    /// Closes every run at `end` and returns the cheapest state.
    fn finish(&self, end: u64, geo: Geometry) -> (Cost, heapless::Vec<Run, MAX_RANGES>) {
        let mut best: Option<(Cost, &State)> = None;
        for state in self.layer().iter() {
            let mut cost = state.key.cost;
            for f in 0..3 {
                if state.key.open & (1 << f) != 0 {
                    cost = cost.plus(geo.run_cost(end - state.key.starts[f].at()));
                }
            }
            if best.is_none_or(|(b, _)| cost < b) {
                best = Some((cost, state));
            }
        }
        // The layer always holds a state: every needed piece admits all three families.
        let Some((cost, state)) = best else {
            let cost = Cost {
                ranges: u32::MAX / 2,
                bytes: 0,
            };
            return (cost, heapless::Vec::new());
        };
        let mut runs = self.trail.runs(state.last);
        for f in 0..3 {
            if state.key.open & (1 << f) != 0 {
                for_ranges(f, state.key.starts[f].at(), end, geo, |run| {
                    let _ = runs.push(run);
                });
            }
        }
        // The trail kept the state's ranges: they cost what the state does.
        debug_assert!(
            cost.ranges as usize > MAX_RANGES
                || (runs.len() == cost.ranges as usize
                    && runs
                        .iter()
                        .map(|r| geo.bytes(u64::from(r.last - r.first) + 1))
                        .sum::<u32>()
                        == cost.bytes)
        );
        (cost, runs)
    }
}

/// Calls `f(p0, p1, class)` for each maximal piece of one class, in order.
fn pieces(target: &dyn Target, default: Action, mut f: impl FnMut(u64, u64, Class)) {
    each_piece(target, default, (0, target.end()), |p0, p1, class| {
        f(p0, p1, class);
        true
    });
}

/// The end of the last needed MSR of the cluster whose first needed MSR is `p0`.
fn cluster_end(target: &dyn Target, default: Action, p0: u64, limit: u64) -> u64 {
    let mut last = p0;
    let mut x = p0;
    while x < target.end() {
        let (intent, next) = target.piece(x as u32);
        let needed = Class::of_piece(intent, default) != Class::Free;
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

/// Units of the weight `lambda` of the pruning bound (module docs, "Pruning"): `lambda =
/// PRUNE_A / PRUNE_SCALE`, 1 / 16 (measured: 1 / 20 to 1 / 7 keep the layers of the mixed
/// clusters of 0x8000 MSRs under [`MAX_STATES`]; 0 and 1 / 2 do not).
const PRUNE_SCALE: u64 = 256;
const PRUNE_A: u64 = 16;

/// Blocks of pieces whose suffix bounds [`Suffix`] keeps at their first piece. The unit tests
/// use 4 (and longer blocks), so that their small clusters span several blocks too.
const BLOCKS: usize = if cfg!(test) { 4 } else { 128 };
/// Pieces of one block, whose suffix bounds [`Suffix`] keeps while the search is in it: a
/// cluster of up to `BLOCKS * BLOCK` needed pieces can be refined.
const BLOCK: usize = if cfg!(test) { 4096 } else { 256 };

/// The relaxed cost of the pieces from one on, for each set held before it (see the module
/// docs, "Pruning"), in units of `1 / (PRUNE_SCALE * L)` ranges: `next` is that of the
/// following piece, `gap` the free MSRs before this one, `len` its MSRs. Values past `u32`
/// are cut to `u32::MAX`, which keeps them lower bounds.
fn relax_piece(next: &[u32; 8], gap: u64, len: u64, class: Class, geo: Geometry) -> [u32; 8] {
    let open = PRUNE_A * u64::from(geo.max_nmsrs);
    let cover = PRUNE_SCALE - PRUNE_A;
    let bridge = gap.saturating_mul(cover).min(open);
    let mut out = [0u32; 8];
    for (before, slot) in out.iter_mut().enumerate() {
        let mut least = u64::MAX;
        for (set, &after) in next.iter().enumerate().skip(1) {
            if !class.allows(set as u8) {
                continue;
            }
            let mut c = u64::from(after)
                + cover
                    .saturating_mul(u64::from(set.count_ones()))
                    .saturating_mul(len);
            for f in 0..3 {
                if set & (1 << f) != 0 {
                    c += if before & (1 << f) != 0 { bridge } else { open };
                }
            }
            least = least.min(c);
        }
        *slot = least.min(u64::from(u32::MAX)) as u32;
    }
    out
}

/// Calls `f(p0, p1, class)` for each maximal needed piece in `[from, end)` (`from` the start of
/// a piece, `end` the end of one) until it returns false.
fn each_needed(
    target: &dyn Target,
    default: Action,
    span: (u64, u64),
    mut f: impl FnMut(u64, u64, Class) -> bool,
) {
    each_piece(target, default, span, |p0, p1, class| {
        class == Class::Free || f(p0, p1, class)
    });
}

/// Calls `f(p0, p1, class)` for each maximal piece of one class in `[from, end)` (`from` the
/// start of a piece), in order, until it returns false.
fn each_piece(
    target: &dyn Target,
    default: Action,
    (from, end): (u64, u64),
    mut f: impl FnMut(u64, u64, Class) -> bool,
) {
    let mut x = from;
    let mut current: Option<(u64, Class)> = None;
    while x < end {
        let (intent, next) = target.piece(x as u32);
        let class = Class::of_piece(intent, default);
        match current {
            Some((_, c)) if c == class => {}
            Some((p0, c)) => {
                if !f(p0, x, c) {
                    return;
                }
                current = Some((x, class));
            }
            None => current = Some((x, class)),
        }
        x = next.min(end);
    }
    if let Some((p0, c)) = current {
        f(p0, end, c);
    }
}

/// The bound the refining search prunes with (module docs, "Pruning"): the relaxed cost of the
/// rest of the cluster after each needed piece, for each set held on it, kept for the first
/// piece of each of up to [`BLOCKS`] blocks and for every piece of the block the search is in
/// (recomputed from the next block's when the search enters a block). About 16 KiB.
struct Suffix {
    /// The ranges pruned against (the relaxation's bound, or a packing's): states that need
    /// more are dropped.
    most: u32,
    /// Where the cluster's needed MSRs end.
    end: u64,
    /// Pieces per block, and blocks.
    per_block: usize,
    blocks: usize,
    /// Per block: its first piece's start and the end of the piece before it.
    starts: [(u32, u32); BLOCKS],
    /// Per block: the relaxed cost from its first piece on, per set held before it.
    entry: [[u32; 8]; BLOCKS + 1],
    /// The pieces of the block loaded, and the relaxed cost after each, per set held on it.
    pieces: [(u32, u32, Class); BLOCK],
    after: [[u32; 8]; BLOCK],
    loaded: usize,
    /// Pieces the search has entered, and the one it is in.
    count: usize,
    current: usize,
}

impl Suffix {
    fn new(most: u32) -> Suffix {
        Suffix {
            most,
            end: 0,
            per_block: 1,
            blocks: 0,
            starts: [(0, 0); BLOCKS],
            entry: [[0; 8]; BLOCKS + 1],
            pieces: [(0, 0, Class::Free); BLOCK],
            after: [[0; 8]; BLOCK],
            loaded: usize::MAX,
            count: 0,
            current: 0,
        }
    }

    /// Computes the bounds of the cluster of needed MSRs in `[first, end)`, from its last piece
    /// to its first; false if it has more pieces than the blocks hold.
    fn prepare(
        &mut self,
        target: &dyn Target,
        default: Action,
        (first, end): (u64, u64),
        geo: Geometry,
    ) -> bool {
        let mut n = 0usize;
        each_needed(target, default, (first, end), |_, _, _| {
            n += 1;
            true
        });
        let per_block = n.div_ceil(BLOCKS).max(1);
        if per_block > BLOCK || end > u64::from(u32::MAX) {
            return false;
        }
        (self.end, self.per_block, self.blocks) = (end, per_block, n.div_ceil(per_block));
        let (mut i, mut before) = (0, first);
        let starts = &mut self.starts;
        each_needed(target, default, (first, end), |p0, p1, _| {
            if i % per_block == 0 {
                starts[i / per_block] = (p0 as u32, before as u32);
            }
            (i, before) = (i + 1, p1);
            true
        });
        self.entry[self.blocks] = [0; 8];
        for block in (0..self.blocks).rev() {
            self.load(block, target, default, geo);
        }
        self.count = 0;
        true
    }

    /// Loads block `block`'s pieces and their bounds, from the next block's, and sets its own.
    fn load(&mut self, block: usize, target: &dyn Target, default: Action, geo: Geometry) {
        let (start, before) = self.starts[block];
        let (per_block, pieces) = (self.per_block, &mut self.pieces);
        let mut k = 0;
        each_needed(
            target,
            default,
            (u64::from(start), self.end),
            |p0, p1, c| {
                pieces[k] = (p0 as u32, p1 as u32, c);
                k += 1;
                k < per_block
            },
        );
        let mut e = self.entry[block + 1];
        for i in (0..k).rev() {
            self.after[i] = e;
            let (p0, p1, class) = self.pieces[i];
            let gap_from = if i == 0 { before } else { self.pieces[i - 1].1 };
            e = relax_piece(&e, u64::from(p0 - gap_from), u64::from(p1 - p0), class, geo);
        }
        self.entry[block] = e;
        self.loaded = block;
    }

    /// The search enters the next needed piece, `[p0, p1)`.
    fn enter(&mut self, (p0, p1): (u64, u64), target: &dyn Target, default: Action, geo: Geometry) {
        let i = self.count;
        self.count += 1;
        let block = i / self.per_block;
        if block != self.loaded {
            self.load(block, target, default, geo);
        }
        self.current = i % self.per_block;
        debug_assert!(self.pieces[self.current].0 == p0 as u32);
        debug_assert!(self.pieces[self.current].1 == p1 as u32);
    }

    /// Whether every packing through `key` at change point `at` of the current piece needs more
    /// than [`most`](Self::most) ranges: its closed ranges, its open runs as far as they reach
    /// (a range each for the part past the last multiple of `L`, weighed as a relaxed run) and
    /// the relaxed cost of the rest, rounded up (module docs, "Pruning").
    fn cannot_reach(&self, key: &Key, at: u64, geo: Geometry) -> bool {
        let l = u64::from(geo.max_nmsrs);
        let (open, cover) = (PRUNE_A * l, PRUNE_SCALE - PRUNE_A);
        let unit = PRUNE_SCALE * l;
        let (_, p1, class) = self.pieces[self.current];
        let (p1, row) = (u64::from(p1), &self.after[self.current]);
        let mut v = u64::from(key.cost.ranges).saturating_mul(unit);
        for f in 0..3 {
            if key.open & (1 << f) != 0 {
                let d = at - key.starts[f].at();
                let whole = d.div_ceil(l) - 1;
                v = v.saturating_add(whole * unit + open + cover * (d - whole * l));
            }
        }
        let rest = if at == p1 {
            u64::from(row[usize::from(key.open)])
        } else {
            let mut least = u64::MAX;
            for set in 1..8u8 {
                if class.allows(set) {
                    let c = open * u64::from((set & !key.open).count_ones())
                        + cover * u64::from(set.count_ones()) * (p1 - at)
                        + u64::from(row[usize::from(set)]);
                    least = least.min(c);
                }
            }
            least
        };
        v.saturating_add(rest) > u64::from(self.most).saturating_mul(unit)
    }
}

/// Searches the cluster again (it ends at `end`), pruning the states that need more than
/// `most` ranges (module docs, "Pruning"); stops as soon as a layer overflows, unless
/// `keep_going` (then it keeps the cheapest states of full layers and tries pieces at their
/// ends only from there). Returns the cheapest packing found if that search stayed exact (then
/// `c.exact` is true, and the packing is minimal if it has at most `most` ranges; if it has
/// more, every packing does), or went on (`c.exact` false: a packing, or `u32::MAX / 2`
/// ranges and none if every state was dropped), else nothing (`c.exact` is false). A frame of its own: the
/// bound's tables are only on the stack while it runs.
#[inline(never)]
fn refine(
    c: &mut Cluster,
    target: &dyn Target,
    default: Action,
    end: u64,
    geo: Geometry,
    most: u32,
    keep_going: bool,
) -> Option<(Cost, heapless::Vec<Run, MAX_RANGES>)> {
    let mut suffix = Suffix::new(most);
    if !suffix.prepare(target, default, (c.first, end), geo) {
        return None;
    }
    let (first, cluster_end) = (c.first, c.end);
    c.reset(
        first,
        cluster_end,
        if keep_going { Mode::GoOn } else { Mode::Stop },
    );
    each_needed(target, default, (first, end), |p0, p1, class| {
        suffix.enter((p0, p1), target, default, geo);
        c.needed(p0, p1, class, geo, Some(&suffix));
        c.exact || keep_going
    });
    (c.exact || keep_going).then(|| c.finish(end, geo))
}

/// The cheapest packing of a cluster (ending at `end`) whose first search, which stops when
/// a layer overflows, has seen all its pieces (or was skipped: `c.skipped`); and a proven lower
/// bound on its ranges. If that
/// search is exact, its answer. Else (module docs, "Pruning") a search pruned against the
/// larger `B` of the relaxation's and the phase bound, which is exact and finds a packing of
/// `B` ranges when the cluster needs no more and no layer overflows, and goes on past an
/// overflow (keeping the cheapest states, trying pieces at their ends only) to a packing of `B`
/// ranges, unproven bytes; else, for a wide cluster that skipped it, the first search (which
/// stands if exact); else the whole search, likewise, and a search pruned against the packing
/// it finds if it has more than `B` ranges. `c.exact` says
/// whether the answer is proven minimal.
fn settle(
    c: &mut Cluster,
    (target, default): (&dyn Target, Action),
    end: u64,
    geo: Geometry,
    check_refine: bool,
) -> (Cost, heapless::Vec<Run, MAX_RANGES>, u32) {
    if c.exact {
        let (cost, runs) = c.finish(end, geo);
        if check_refine {
            let refined = refine(c, target, default, end, geo, cost.ranges, false).map(|r| r.0);
            assert_eq!(refined, Some(cost), "the pruned search lost the minimum");
            // Against one range fewer it finds no packing within that many, and does not
            // overflow. (This exercises the search with most states dropped; only the check
            // against the minimum above catches a bound that drops too much.)
            if let Some(fewer) = cost.ranges.checked_sub(1) {
                let refined = refine(c, target, default, end, geo, fewer, false);
                assert!(
                    refined.is_some_and(|r| r.0.ranges > fewer),
                    "the pruned search found fewer ranges than the minimum"
                );
            }
        }
        return (cost, runs, cost.ranges);
    }
    let first = c.first;
    let bound = cluster_bound(target, default, (first, end), geo, u32::MAX).max(phase_bound(
        target,
        default,
        (first, end),
        geo,
    ));
    let mut lower = bound;
    match refine(c, target, default, end, geo, bound, true) {
        // Minimal if the search stayed exact; else the count is (`bound` is a lower bound).
        Some((cost, runs)) if cost.ranges <= bound => return (cost, runs, cost.ranges),
        // Exact, and nothing within `bound` ranges: the cluster needs more.
        Some(_) if c.exact => lower = bound.saturating_add(1),
        _ => {}
    }
    if c.skipped {
        // The first search, which a wide cluster skipped, may still be exact.
        search_again(c, (target, default), end, geo, Mode::Stop);
        if c.exact {
            let (cost, runs) = c.finish(end, geo);
            return (cost, runs, cost.ranges);
        }
    }
    // Its layers overflow where the first search's did: it is not exact, and trying pieces at
    // their ends only takes a tenth of the time (measured on the mixed clusters of 0x10000
    // MSRs, for packings of the same ranges and bytes within 0.3%).
    search_again(c, (target, default), end, geo, Mode::EndsOnly);
    let (mut cost, mut runs) = c.finish(end, geo);
    if !c.exact && cost.ranges > bound {
        if let Some(refined) = refine(c, target, default, end, geo, cost.ranges, false) {
            // The refined search is exact: it cannot find a dearer packing.
            debug_assert!(refined.0 <= cost);
            if refined.0 <= cost {
                (cost, runs) = refined;
            } else {
                // Only an unsound bound gets here: then nothing is proven.
                c.exact = false;
            }
        }
    }
    (cost, runs, if c.exact { cost.ranges } else { lower })
}

/// Searches the cluster (its needed pieces end at `end`) again from its start, unpruned, in
/// `mode`; a search in [`Mode::Stop`] stops at its first overflow.
fn search_again(
    c: &mut Cluster,
    (target, default): (&dyn Target, Action),
    end: u64,
    geo: Geometry,
    mode: Mode,
) {
    let (first, cluster_end) = (c.first, c.end);
    c.reset(first, cluster_end, mode);
    each_needed(target, default, (first, end), |p0, p1, class| {
        c.needed(p0, p1, class, geo, None);
        mode != Mode::Stop || c.exact
    });
}

/// Units of the relaxation's weight `lambda` (see the module docs): `lambda = a / SCALE`.
const SCALE: u64 = 1 << 12;

/// `SCALE * L` times the least relaxed cost `lambda * runs + (1 - lambda) * covered / L` of a
/// covering of the cluster of needed MSRs in `[first, end)`, with `lambda = a / SCALE`: a
/// dynamic program over its pieces with the open set of families as its state (see the module
/// docs, "A bound for any cluster"). Linear in the pieces: 8 states, 64 moves per piece.
fn relaxed_cost(
    target: &dyn Target,
    default: Action,
    (first, end): (u64, u64),
    geo: Geometry,
    a: u64,
) -> u64 {
    const NO: u64 = u64::MAX / 4;
    let open = a * u64::from(geo.max_nmsrs);
    let cover = SCALE - a;
    let mut best = [NO; 8];
    best[0] = 0;
    let mut gap = 0u64;
    let mut x = first;
    while x < end {
        let (intent, next) = target.piece(x as u32);
        let next = next.min(end);
        let class = Class::of_piece(intent, default);
        if class == Class::Free {
            gap += next - x;
            x = next;
            continue;
        }
        // A family open on both sides of the gap covers it or starts a run again.
        let bridge = gap.saturating_mul(cover).min(open);
        let mut moved = [NO; 8];
        for (to, slot) in moved.iter_mut().enumerate().skip(1) {
            if !class.allows(to as u8) {
                continue;
            }
            let mut least = NO;
            for (from, &cost) in best.iter().enumerate() {
                let mut c = cost;
                for f in 0..3 {
                    if to & (1 << f) != 0 {
                        c += if from & (1 << f) != 0 { bridge } else { open };
                    }
                }
                least = least.min(c);
            }
            *slot = least + u64::from((to as u8).count_ones()) * (next - x) * cover;
        }
        best = moved;
        gap = 0;
        x = next;
    }
    best.into_iter().min().unwrap_or(0)
}

/// A proven lower bound on the ranges the cluster of needed MSRs in `[first, end)` needs: the
/// relaxation of the module docs ("A bound for any cluster") at the weights a ternary search
/// over the concave relaxed optimum tries, rounded up; it stops early at `goal` (a packing
/// found: the bound cannot pass it). Its weight 0 gives `ceil(needed MSRs / L)`.
fn cluster_bound(
    target: &dyn Target,
    default: Action,
    span: (u64, u64),
    geo: Geometry,
    goal: u32,
) -> u32 {
    let unit = SCALE * u64::from(geo.max_nmsrs);
    let at = |a: u64| relaxed_cost(target, default, span, geo, a);
    let bound = |cost: u64| u32::try_from(cost.div_ceil(unit)).unwrap_or(u32::MAX);
    let mut most = at(0).max(at(SCALE));
    let (mut lo, mut hi) = (0, SCALE);
    while hi - lo > 2 && bound(most) < goal {
        let (m1, m2) = (lo + (hi - lo) / 3, hi - (hi - lo) / 3);
        let (c1, c2) = (at(m1), at(m2));
        most = most.max(c1).max(c2);
        // Concave: the maximum lies on the side of the larger value, or between equal ones.
        if c1 < c2 {
            lo = m1;
        } else if c1 > c2 {
            hi = m2;
        } else {
            (lo, hi) = (m1, m2);
        }
    }
    if bound(most) < goal {
        for a in lo..=hi {
            most = most.max(at(a));
        }
    }
    bound(most)
}

/// A proven lower bound on the ranges the cluster of needed MSRs in `[first, end)` needs: the
/// phase bound of the module docs ("A bound that keeps the rounding"), a program with a step
/// at the start of each needed piece and at each grid point, in order. Time linear in the
/// steps (a few hundred thousand operations each), a table of 5,832 bytes in a frame of its
/// own.
#[inline(never)]
fn phase_bound(target: &dyn Target, default: Action, span: (u64, u64), geo: Geometry) -> u32 {
    let mut phases = Phases::new(geo);
    each_piece(target, default, span, |p0, p1, class| {
        if class != Class::Free || phases.on_point(p0) {
            phases.step(p0, class);
        }
        let mut g = phases.next_point(p0);
        while g < p1 {
            phases.step(g, class);
            g = phases.next_point(g);
        }
        true
    });
    u32::from(phases.least())
}

/// The sum of [`phase_bound`] over the clusters of `target` (for the tests).
#[cfg(test)]
pub(crate) fn phase_lower(target: &dyn Target, geo: Geometry, default: Action) -> u64 {
    sum_over_clusters(target, geo, default, |span| {
        phase_bound(target, default, span, geo)
    })
}

/// The sum of [`cluster_bound`] over the clusters of `target` (for the tests: `solve` computes
/// it only for the clusters its search did not solve exactly).
#[cfg(test)]
pub(crate) fn relaxed_lower(target: &dyn Target, geo: Geometry, default: Action) -> u64 {
    sum_over_clusters(target, geo, default, |span| {
        cluster_bound(target, default, span, geo, u32::MAX)
    })
}

/// The sum of `bound` over the clusters of `target`, each given as its first needed MSR and the
/// end of its last.
#[cfg(test)]
fn sum_over_clusters(
    target: &dyn Target,
    geo: Geometry,
    default: Action,
    mut bound: impl FnMut((u64, u64)) -> u32,
) -> u64 {
    let limit = u64::from(geo.max_nmsrs);
    let mut total = 0u64;
    let mut span: Option<(u64, u64)> = None;
    pieces(target, default, |p0, p1, class| {
        if class == Class::Free {
            return;
        }
        span = match span {
            Some((first, e)) if p0 - e < limit => Some((first, p1)),
            Some(done) => {
                total += u64::from(bound(done));
                Some((p0, p1))
            }
            None => Some((p0, p1)),
        };
    });
    if let Some(done) = span {
        total += u64::from(bound(done));
    }
    total
}

/// The lower bound of the module docs: the sum over clusters of `ceil(needed MSRs / L)`.
/// Cluster ends remembered by the lower bound's pass: a search runs only below 64 ranges, so
/// with at most 64 clusters (each needs a range); past that, ends are looked up again.
type Ends = heapless::Vec<u64, 64>;

fn lower_bound(target: &dyn Target, geo: Geometry, default: Action, ends: &mut Ends) -> u64 {
    let limit = u64::from(geo.max_nmsrs);
    let mut bound = 0u64;
    let mut cluster: u64 = 0; // needed MSRs of the open cluster
    let mut last_need_end: Option<u64> = None;
    pieces(target, default, |p0, p1, class| {
        if class == Class::Free {
            return;
        }
        if let Some(e) = last_need_end.filter(|&e| p0 - e >= limit) {
            bound += cluster.div_ceil(limit);
            cluster = 0;
            let _ = ends.push(e);
        }
        cluster += p1 - p0;
        last_need_end = Some(p1);
    });
    if let Some(e) = last_need_end {
        let _ = ends.push(e);
    }
    bound + cluster.div_ceil(limit)
}

/// Searches the best packing of `target` with the given default action. When the lower bound
/// already exceeds `give_up` ranges, the search is skipped: the solution then has that bound as
/// its count, no runs, and `searched == false`.
pub(crate) fn solve(target: &dyn Target, geo: Geometry, default: Action, give_up: u32) -> Solution {
    solve_checked(target, geo, default, give_up, false)
}

/// [`solve`], for the tests: with `check_refine`, every cluster the search solves exactly is
/// searched again with pruning against its own minimum count of ranges (the tightest a found
/// packing can make it), which must stay exact and find the same cost, and against one range
/// fewer, which must stay exact and find nothing within it, or this panics.
#[cfg(test)]
pub(crate) fn solve_checking_refine(
    target: &dyn Target,
    geo: Geometry,
    default: Action,
) -> Solution {
    solve_checked(target, geo, default, u32::MAX, true)
}

fn solve_checked(
    target: &dyn Target,
    geo: Geometry,
    default: Action,
    give_up: u32,
    check_refine: bool,
) -> Solution {
    let mut ends = Ends::new();
    let bound = lower_bound(target, geo, default, &mut ends);
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
    let mut cluster = Cluster::new();
    let mut clusters = 0;
    let mut active = false;
    let mut last_need_end = 0u64;
    // The proven lower bounds of the clusters: the cost of those the search solved exactly, the
    // relaxation's bound for the others.
    let mut proven = 0u64;
    let finish = |c: &mut Cluster, end: u64, total: &mut Solution, proven: &mut u64| {
        let (cost, runs, lower) = settle(c, (target, default), end, geo, check_refine);
        total.cost = total.cost.plus(cost);
        total.exact &= c.exact;
        *proven += u64::from(lower);
        for run in runs {
            let _ = total.runs.push(run);
        }
    };
    pieces(target, default, |p0, p1, class| {
        if class == Class::Free {
            return;
        }
        if active && p0 - last_need_end >= limit {
            finish(&mut cluster, last_need_end, &mut total, &mut proven);
            active = false;
        }
        if !active {
            let end = match ends.get(clusters) {
                Some(&end) if ends.len() < ends.capacity() => end,
                _ => cluster_end(target, default, p0, limit),
            };
            cluster.reset(p0, end, Mode::Stop);
            // A cluster spanning two ranges or more skips the first search (see `settle`);
            // not when the tests check the pruned search against the first one's minimum.
            if end - p0 >= WIDE * limit && !check_refine {
                (cluster.exact, cluster.skipped) = (false, true);
            }
            clusters += 1;
            active = true;
        }
        cluster.needed(p0, p1, class, geo, None);
        last_need_end = p1;
    });
    if active {
        finish(&mut cluster, last_need_end, &mut total, &mut proven);
    }
    total.lower = total.lower.max(u32::try_from(proven).unwrap_or(u32::MAX));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// The trail keeps, in order, the ranges of every state of the two layers through any
    /// number of collections, and nothing else.
    #[test]
    fn the_trail_keeps_exactly_the_ranges_the_layers_reach() {
        let mut trail = Trail::new();
        // Lists by their last entry, with the ranges they hold, oldest first.
        let mut lists: Vec<(u32, Vec<Run>)> = std::vec![(NONE, Vec::new())];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            // Grow lists until the trail is nearly full.
            while trail.room() > 16 {
                // States hold at most 16 ranges.
                let (last, runs) = lists[next(lists.len() as u64) as usize].clone();
                if runs.len() == MAX_RANGES {
                    continue;
                }
                let first = next(1 << 32) as u32 & !0x3fff;
                let run = Run {
                    family: Family::ALL[next(3) as usize],
                    first,
                    last: first + next(0x3000) as u32,
                };
                let mut runs = runs;
                runs.push(run);
                lists.push((trail.push(last, run), runs));
            }
            // Two layers of some of them.
            let mut layers = [Layer::new(), Layer::new()];
            let mut kept: Vec<Vec<Run>> = Vec::new();
            for layer in layers.iter_mut() {
                for _ in 0..next(MAX_STATES as u64) {
                    let (last, runs) = &lists[next(lists.len() as u64) as usize];
                    let _ = layer.push(State::start(*last));
                    kept.push(runs.clone());
                }
            }
            let mut reached = std::collections::BTreeSet::new();
            for s in layers.iter().flat_map(|l| l.iter()) {
                let mut i = s.last;
                while i != NONE {
                    reached.insert(i);
                    i = trail.parent(i as usize);
                }
            }
            let [first, second] = &mut layers;
            trail.collect([first, second]);
            assert_eq!(trail.len, reached.len(), "round {round}");
            let after: Vec<Vec<Run>> = layers
                .iter()
                .flat_map(|l| l.iter())
                .map(|s| trail.runs(s.last).to_vec())
                .collect();
            assert!(after == kept, "round {round}");
            // The lists left are those of the layers (and the empty one).
            lists = layers
                .iter()
                .flat_map(|l| l.iter())
                .zip(kept)
                .map(|(s, runs)| (s.last, runs))
                .collect();
            lists.push((NONE, Vec::new()));
        }
    }
}
