//! The table of the phase bound (see `solve`'s module docs, "A bound that keeps the
//! rounding"): a program over the points where a cluster's class may matter, whose state gives,
//! per family, whether it has an open run and, for an open run, its *phase*: the grid point its
//! charges count from, modulo `L`, or that no grid point has passed since it opened (pending).

use super::{Class, Geometry};

/// The most phases per family: `L` is cut into `P` grid steps of `G = L / P` MSRs, with `P`
/// the largest divisor of `L` up to this (16 for the kernel's 0x3000: `G` = 768).
const MAX_PHASES: usize = 16;

/// Values per family in a table: a phase `0..P`, [`PENDING`] or [`CLOSED`].
const SIDE: usize = MAX_PHASES + 2;

/// The family's run opened after the last grid point.
const PENDING: usize = MAX_PHASES;

/// The family has no open run.
const CLOSED: usize = MAX_PHASES + 1;

/// States of a table: a value per family (5,832 bytes).
const CELLS: usize = SIDE * SIDE * SIDE;

/// No way to reach the state (a set the class does not allow, or a phase past `P`).
const NO: u8 = u8::MAX;

/// One more charge; larger costs are cut below [`NO`], which keeps them lower bounds.
fn charge(v: u8) -> u8 {
    if v == NO {
        NO
    } else {
        v.saturating_add(1).min(NO - 1)
    }
}

/// The least charges of the runs so far, per state, as the program walks a cluster forward.
pub(crate) struct Phases {
    /// `G`: MSRs per grid step.
    step: u64,
    /// `P = L / G`.
    phases: usize,
    table: [u8; CELLS],
}

impl Phases {
    /// Every family closed at no cost, for ranges of `geo`.
    pub(crate) fn new(geo: Geometry) -> Phases {
        let l = u64::from(geo.max_nmsrs);
        let phases = (1..=MAX_PHASES as u64)
            .rev()
            .find(|&p| l.is_multiple_of(p))
            .unwrap_or(1);
        let mut table = [NO; CELLS];
        table[CLOSED + SIDE * (CLOSED + SIDE * CLOSED)] = 0;
        Phases {
            step: l / phases,
            phases: phases as usize,
            table,
        }
    }

    /// The first grid point after `at`.
    pub(crate) fn next_point(&self, at: u64) -> u64 {
        (at / self.step + 1) * self.step
    }

    /// Whether `at` is a grid point.
    pub(crate) fn on_point(&self, at: u64) -> bool {
        at.is_multiple_of(self.step)
    }

    /// The step at `a`, the first MSR of an interval whose set is held from `a` to the next
    /// step, and which must serve `class` (`a`'s): per family, a run closes (free), continues or
    /// opens (1, also when one was open; pending, or with phase `c` at a grid point of phase
    /// `c`). At a grid point of phase `c`, a run that continues is charged 1 if its phase is `c`,
    /// and a pending one takes phase `c`, free. Then the sets `class` does not allow are
    /// unreachable.
    pub(crate) fn step(&mut self, a: u64, class: Class) {
        let charged = self
            .on_point(a)
            .then(|| ((a / self.step) % self.phases as u64) as usize);
        let mut least = [NO; SIDE * SIDE];
        for f in 0..3 {
            // The table in planes along family `f`: `SIDE` rows of `width` states, row `p`
            // those where family `f` has value `p`.
            let width = SIDE.pow(f as u32);
            for rows in self.table.chunks_exact_mut(width * SIDE) {
                let least = &mut least[..width];
                least.fill(NO);
                for p in (0..self.phases).chain([PENDING, CLOSED]) {
                    for (m, &v) in least.iter_mut().zip(&rows[p * width..(p + 1) * width]) {
                        *m = (*m).min(v);
                    }
                }
                if let Some(c) = charged {
                    for j in 0..width {
                        let v = charge(rows[c * width + j]).min(rows[PENDING * width + j]);
                        rows[c * width + j] = v;
                        rows[PENDING * width + j] = NO;
                    }
                }
                // A run opened on a grid point starts its phase there: `up(a0) = a0`.
                let opened = charged.unwrap_or(PENDING);
                for (o, &m) in rows[opened * width..(opened + 1) * width]
                    .iter_mut()
                    .zip(&*least)
                {
                    *o = (*o).min(charge(m));
                }
                rows[CLOSED * width..(CLOSED + 1) * width].copy_from_slice(least);
            }
        }
        if class == Class::Free {
            return;
        }
        // Family 0 varies along a row; families 1 and 2 are fixed in it.
        for (i, row) in self.table.chunks_exact_mut(SIDE).enumerate() {
            let (p1, p2) = (i % SIDE, i / SIDE);
            let high = u8::from(p1 != CLOSED) << 1 | u8::from(p2 != CLOSED) << 2;
            let (closed_ok, open_ok) = (class.allows(high), class.allows(high | 1));
            for (p0, v) in row.iter_mut().enumerate() {
                if !(if p0 == CLOSED { closed_ok } else { open_ok }) {
                    *v = NO;
                }
            }
        }
    }

    /// The least charges over every state: every run closes at the cluster's end, free.
    pub(crate) fn least(&self) -> u8 {
        self.table.iter().copied().min().unwrap_or(NO)
    }
}
