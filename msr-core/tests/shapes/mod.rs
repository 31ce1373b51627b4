//! Policies of known shape for the packing tests, shared by `tests/pack_scale.rs` and the unit
//! tests in `src/pack.rs` (which include this file with `#[path]`): dense clusters wider than
//! one range, where the search is hardest. The includer brings `Access`, `Action` and `Rule`
//! into scope; each uses some of the shapes.
#![allow(dead_code)]

use super::{Access, Action, Rule};
use std::vec::Vec;

/// A xorshift generator: the same rules for the same seed, everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where the shapes start.
const BASE: u32 = 0x20_0000;

/// Shape A: read-only and write-only single MSRs alternating, 1 to 3 MSRs apart, over `span`
/// MSRs.
pub fn alternating(seed: u64, span: u32) -> Vec<Rule> {
    let mut rng = Rng((seed * 7919) | 1);
    let mut rules = Vec::new();
    let mut at = BASE;
    while at < BASE + span {
        let access = if rules.len() % 2 == 0 {
            Access::READ
        } else {
            Access::WRITE
        };
        rules.push(Rule::single(at, access, Action::Deny));
        at += 1 + rng.below(3) as u32;
    }
    rules
}

/// Shape B: runs of 1 to 100 MSRs of random access, 0 to 39 MSRs apart, over `span` MSRs.
pub fn mixed_runs(seed: u64, span: u32) -> Vec<Rule> {
    let mut rng = Rng((seed * 104_729) | 1);
    let mut rules = Vec::new();
    let mut at = BASE;
    while at < BASE + span {
        let len = 1 + rng.below(100) as u32;
        let access = Access::from_bits_truncate(1 + rng.below(3) as u32);
        rules.push(Rule::new(at, at + len - 1, access, Action::Deny));
        at += len + rng.below(40) as u32;
    }
    rules
}

/// Shape C: read-only or write-only single MSRs, 1 in 10 a run of 20 to 219, 1 to 3 MSRs
/// apart, over `span` MSRs.
pub fn sparse_runs(seed: u64, span: u32) -> Vec<Rule> {
    let mut rng = Rng((seed * 15_485_863) | 1);
    let mut rules = Vec::new();
    let mut at = BASE;
    while at < BASE + span {
        let len = if rng.below(10) == 0 {
            20 + rng.below(200) as u32
        } else {
            1
        };
        let access = if rng.below(2) == 0 {
            Access::READ
        } else {
            Access::WRITE
        };
        rules.push(Rule::new(at, at + len - 1, access, Action::Deny));
        at += len + 1 + rng.below(3) as u32;
    }
    rules
}
