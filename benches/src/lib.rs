//! Baselines and inputs for the msr-filter benchmarks (`benches/benches/*.rs`).
//!
//! Everything here exists to be compared with the product and is never used by it:
//!
//! - [`KernelFilter`] and [`kernel_scan`]: the kernel's own lookup, `kvm_msr_allowed()`, a linear
//!   scan over the installed ranges in slot order;
//! - [`BTreeMapFilter`]: a `BTreeMap<u32, Action>` keyed per MSR;
//! - [`LinearDispatcher`]: a QEMU-style handler table, scanned linearly on every exit;
//! - the inputs: [`lookup_filter`] (filters of 1 to 16 ranges), [`lookup_probes`] (hits and misses)
//!   and [`dispatch_msrs`].
//!
//! The crate's tests check that every baseline decides exactly as the product on the benchmark
//! inputs, so the benchmarks compare equal work.
// Bench fixtures and baselines, never published: Debug would add nothing.
#![allow(missing_debug_implementations)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use kvm_ioctls::{MsrExitReason, ReadMsrExit, VcpuExit};
use msr_filter_core::{Access, AccessType, Action, Filter, Policy, RawFilter, RawRange};
use msr_filter_kvm::handlers::Constant;
use msr_filter_kvm::{Dispatcher, MsrContext, MsrHandler};

/// The x2APIC MSRs, which the kernel never filters.
const X2APIC: std::ops::RangeInclusive<u32> = 0x800..=0x8ff;

/// One range as the kernel keeps it after `KVM_X86_SET_MSR_FILTER` (`struct msr_bitmap_range`):
/// flags, base, nmsrs and a separately allocated bitmap.
#[derive(Clone, Debug)]
pub struct KernelRange {
    /// `KVM_MSR_FILTER_READ` (1) | `KVM_MSR_FILTER_WRITE` (2).
    pub flags: u32,
    /// First MSR.
    pub base: u32,
    /// Number of MSRs.
    pub nmsrs: u32,
    /// One bit per MSR, 1 = allow, in `unsigned long` words.
    pub bitmap: Box<[u64]>,
}

/// The kernel's `struct kvm_x86_msr_filter`: the default and the non-empty ranges, in slot order
/// (`kvm_add_msr_filter()` skips empty slots, so `count` is the number of non-empty ranges).
#[derive(Clone, Debug)]
pub struct KernelFilter {
    /// `!(flags & KVM_MSR_FILTER_DEFAULT_DENY)`.
    pub default_allow: bool,
    /// The installed ranges; `ranges.len()` is the kernel's `count`.
    pub ranges: Vec<KernelRange>,
}

impl KernelFilter {
    /// Copies `filter` as the kernel does on install.
    pub fn new(filter: &Filter) -> KernelFilter {
        KernelFilter {
            default_allow: filter.default_action() == Action::Allow,
            ranges: filter
                .used_ranges()
                .map(|(_, r)| KernelRange {
                    flags: r.flags().bits(),
                    base: r.base(),
                    nmsrs: r.nmsrs(),
                    bitmap: r.bitmap_words().into(),
                })
                .collect(),
        }
    }
}

/// Baseline: the kernel's `kvm_msr_allowed()` (arch/x86/kvm/x86.c), as plainly as the kernel
/// writes it: x2APIC MSRs are allowed; otherwise the first range, in slot order, whose
/// `[base, base + nmsrs)` (32-bit end) holds the MSR and whose flags include the access decides
/// by its bit; otherwise the default.
#[allow(clippy::manual_range_contains)] // the kernel's spelling
pub fn kernel_scan(filter: &KernelFilter, index: u32, access: AccessType) -> Action {
    // x2APIC MSRs do not support filtering.
    if index >= 0x800 && index <= 0x8ff {
        return Action::Allow;
    }
    let kind = access.flag().bits();
    let mut allowed = filter.default_allow;
    for range in &filter.ranges {
        let start = range.base;
        let end = start.wrapping_add(range.nmsrs);
        let flags = range.flags;
        if index >= start && index < end && flags & kind != 0 {
            let bit = index - start;
            allowed = range.bitmap[(bit / 64) as usize] >> (bit % 64) & 1 == 1;
            break;
        }
    }
    if allowed {
        Action::Allow
    } else {
        Action::Deny
    }
}

/// Baseline: one `BTreeMap<u32, Action>` per access type, keyed per MSR. It holds every MSR
/// whose decision differs from the default (the smallest per-MSR map that decides exactly as the
/// filter); any other MSR gets the default.
#[derive(Clone, Debug)]
pub struct BTreeMapFilter {
    default: Action,
    /// Reads, writes.
    maps: [BTreeMap<u32, Action>; 2],
}

impl BTreeMapFilter {
    /// Refuses filters whose ranges cover more MSRs than this: a per-MSR map stops being a
    /// sensible design long before.
    pub const MAX_ENTRIES: u64 = 1 << 20;

    /// The map of `filter`, built by asking [`kernel_scan`] for every MSR a range covers; `None`
    /// if the ranges cover more than [`Self::MAX_ENTRIES`] MSRs.
    pub fn new(filter: &Filter) -> Option<BTreeMapFilter> {
        let covered: u64 = filter
            .used_ranges()
            .map(|(_, r)| u64::from(r.nmsrs()))
            .sum();
        if covered > Self::MAX_ENTRIES {
            return None;
        }
        let kernel = KernelFilter::new(filter);
        let default = filter.default_action();
        let mut maps = [BTreeMap::new(), BTreeMap::new()];
        for (_, r) in filter.used_ranges() {
            let Some((first, end)) = r.span() else {
                continue;
            };
            for index in first..end {
                for access in AccessType::ALL {
                    let action = kernel_scan(&kernel, index, access);
                    if action != default {
                        maps[access as usize].insert(index, action);
                    }
                }
            }
        }
        Some(BTreeMapFilter { default, maps })
    }

    /// The decision for one access.
    pub fn decide(&self, index: u32, access: AccessType) -> Action {
        if X2APIC.contains(&index) {
            return Action::Allow;
        }
        self.maps[access as usize]
            .get(&index)
            .copied()
            .unwrap_or(self.default)
    }

    /// Entries in both maps.
    pub fn len(&self) -> usize {
        self.maps.iter().map(BTreeMap::len).sum()
    }

    /// Whether both maps are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The 16 ranges the lookup filters take their first `n` from: (flags, base, nmsrs), spread over
/// the MSR space where VMMs filter (architectural, hypervisor, AMD and made-up MSRs).
const LOOKUP_RANGES: [(u32, u32, u32); 16] = [
    (3, 0xc000_0100, 8),      // FS_BASE, GS_BASE, KERNEL_GS_BASE, TSC_AUX, ...
    (3, 0x0000_0000, 0x200),  // architectural
    (3, 0x4000_0000, 0x100),  // Hyper-V
    (3, 0xc001_0000, 0x300),  // AMD
    (2, 0x0000_0400, 0x100),  // MCA banks, writes
    (3, 0xc000_0080, 8),      // EFER, STAR, LSTAR, ...
    (1, 0x0000_0600, 0x100),  // reads
    (3, 0x0000_1000, 0x800),  // above the x2APIC MSRs
    (3, 0x4b56_4d00, 0x10),   // KVM
    (3, 0x474f_4f00, 1),      // the selftest's made-up MSR
    (1, 0x0000_0300, 0x100),  // reads
    (3, 0xc001_1000, 0x100),  // AMD
    (2, 0x0000_0200, 0x100),  // MTRRs, writes
    (3, 0x0000_0d90, 0x100),  // architectural
    (1, 0xc002_0000, 0x200),  // reads
    (3, 0x0000_4000, 0x3000), // the largest range the kernel takes
];

/// A small deterministic generator (xorshift64), so every run measures the same inputs.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A default-allow filter with the first `n` (1..=16) of the benchmark's ranges, bitmaps denying
/// about half of each range.
pub fn lookup_filter(n: usize) -> Filter {
    let mut rng = XorShift::new(0x5eed_0000 + n as u64);
    let bitmaps: Vec<Vec<u8>> = LOOKUP_RANGES[..n]
        .iter()
        .map(|&(_, _, nmsrs)| {
            (0..nmsrs.div_ceil(64) * 8)
                .map(|_| rng.next_u64() as u8)
                .collect()
        })
        .collect();
    let ranges: Vec<RawRange<'_>> = LOOKUP_RANGES[..n]
        .iter()
        .zip(&bitmaps)
        .map(|(&(flags, base, nmsrs), bitmap)| RawRange {
            flags,
            base,
            nmsrs,
            bitmap,
        })
        .collect();
    Filter::from_raw(&RawFilter {
        flags: 0,
        ranges: &ranges,
    })
    .expect("the benchmark ranges are valid")
}

/// `count` probes (MSR, access) for `filter`, in random order: half hit a range (an MSR inside
/// a range, with an access type the range covers), half miss every range (a quarter of those
/// within 16 MSRs of a range's edge, the rest anywhere).
pub fn lookup_probes(filter: &Filter, count: usize) -> Vec<(u32, AccessType)> {
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let ranges: Vec<_> = filter.used_ranges().map(|(_, r)| r.clone()).collect();
    let hits = |index: u32, access: AccessType| ranges.iter().any(|r| r.matches(index, access));
    let mut probes = Vec::with_capacity(count);
    while probes.len() < count {
        let access = AccessType::ALL[rng.below(2) as usize];
        let r = &ranges[rng.below(ranges.len() as u64) as usize];
        if probes.len() % 2 == 0 {
            if !r.flags().includes(access) {
                continue;
            }
            let index = r.base() + rng.below(u64::from(r.nmsrs())) as u32;
            probes.push((index, access));
        } else {
            let index = if rng.below(4) == 0 {
                let near = 1 + rng.below(16) as u32;
                if rng.below(2) == 0 {
                    r.base().wrapping_sub(near)
                } else {
                    r.base().wrapping_add(r.nmsrs()).wrapping_add(near - 1)
                }
            } else {
                rng.next_u64() as u32
            };
            if hits(index, access) || X2APIC.contains(&index) {
                continue;
            }
            probes.push((index, access));
        }
    }
    probes
}

/// The `n` MSRs the dispatch benchmark registers one handler each for: every other MSR from
/// 0x4000_0100 up (a hypervisor-defined block, away from the x2APIC MSRs).
pub fn dispatch_msrs(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 0x4000_0100 + 2 * i).collect()
}

/// `count` MSR indexes drawn uniformly from `msrs`, in random order.
pub fn dispatch_probes(msrs: &[u32], count: usize) -> Vec<u32> {
    let mut rng = XorShift::new(0xd15_a7c4);
    (0..count)
        .map(|_| msrs[rng.below(msrs.len() as u64) as usize])
        .collect()
}

/// The three dispatchers of the `dispatch` group, over the same handlers: one
/// `handlers::Constant` per MSR of [`dispatch_msrs`].
pub struct DispatchSetup {
    /// The handled MSRs.
    pub msrs: Vec<u32>,
    /// The product.
    pub ours: Dispatcher,
    /// The product built with `exit_counters(false)`: what the per-handler counts cost.
    pub uncounted: Dispatcher,
    /// QEMU's scheme, without counters.
    pub linear: LinearDispatcher,
    /// QEMU's scheme with the dispatcher's per-handler counter.
    pub counted: LinearDispatcher,
    /// A `BTreeMap<u32, Arc<dyn MsrHandler>>` (what a Rust VMM writes first).
    pub btreemap: BTreeMapDispatcher,
}

/// Builds the [`DispatchSetup`] for `n` handlers.
pub fn dispatch_setup(n: usize) -> DispatchSetup {
    let msrs = dispatch_msrs(n);
    let mut builder = Dispatcher::builder(&Policy::<1>::new(Action::Allow));
    let mut uncounted = Dispatcher::builder(&Policy::<1>::new(Action::Allow)).exit_counters(false);
    let mut linear = LinearDispatcher::new();
    let mut counted = LinearDispatcher::with_counters();
    let mut btreemap = BTreeMapDispatcher::default();
    for &m in &msrs {
        btreemap.handle(m, Constant::new(u64::from(m)));
        builder = builder
            .handle(m, Access::READ_WRITE, Constant::new(u64::from(m)))
            .expect("register handler");
        uncounted = uncounted
            .handle(m, Access::READ_WRITE, Constant::new(u64::from(m)))
            .expect("register handler");
        linear.handle(m, Constant::new(u64::from(m)));
        counted.handle(m, Constant::new(u64::from(m)));
    }
    let ours = builder.build().expect("build dispatcher");
    let uncounted = uncounted.build().expect("build dispatcher");
    DispatchSetup {
        msrs,
        ours,
        uncounted,
        linear,
        counted,
        btreemap,
    }
}

/// Baseline: handlers in a `BTreeMap<u32, Arc<dyn MsrHandler>>` keyed by MSR, one MSR per
/// handler, no counters; an MSR with no handler gets #GP.
#[derive(Default)]
pub struct BTreeMapDispatcher {
    handlers: BTreeMap<u32, Arc<dyn MsrHandler>>,
}

impl BTreeMapDispatcher {
    /// Adds a handler for reads and writes of `index`.
    pub fn handle(&mut self, index: u32, handler: impl MsrHandler + 'static) {
        self.handlers.insert(index, Arc::new(handler));
    }

    /// Completes an MSR exit; returns whether it was one.
    pub fn dispatch(&self, vcpu: usize, exit: &mut VcpuExit<'_>) -> bool {
        match exit {
            VcpuExit::X86Rdmsr(e) => {
                *e.error = 1;
                if let Some(h) = self.handlers.get(&e.index) {
                    let ctx = MsrContext {
                        vcpu,
                        index: e.index,
                        reason: e.reason,
                    };
                    if let Ok(v) = h.read(&ctx) {
                        *e.data = v;
                        *e.error = 0;
                    }
                }
                true
            }
            VcpuExit::X86Wrmsr(e) => {
                *e.error = 1;
                if let Some(h) = self.handlers.get(&e.index) {
                    let ctx = MsrContext {
                        vcpu,
                        index: e.index,
                        reason: e.reason,
                    };
                    *e.error = u8::from(h.write(&ctx, e.data).is_err());
                }
                true
            }
            _ => false,
        }
    }
}

/// Completes one FILTER `rdmsr` exit of `index` with `dispatch`; returns `(data, error)`.
#[inline]
pub fn read_exit(index: u32, dispatch: impl FnOnce(&mut VcpuExit<'_>)) -> (u64, u8) {
    let (mut data, mut error) = (0u64, 0u8);
    let mut exit = VcpuExit::X86Rdmsr(ReadMsrExit {
        error: &mut error,
        reason: MsrExitReason::Filter,
        index,
        data: &mut data,
    });
    dispatch(&mut exit);
    (data, error)
}

/// Baseline: a QEMU-style MSR handler table (QEMU's `kvm_filter_msr()` fills an array of
/// `{msr, rdmsr, wrmsr}` and `kvm_handle_rdmsr()` scans it for the exit's MSR on every exit).
/// One MSR per handler; an MSR with no handler gets #GP. Without counters, as QEMU; built with
/// [`LinearDispatcher::with_counters`] it also bumps a per-handler `Relaxed` atomic counter on
/// every exit, as [`msr_filter_kvm::Dispatcher`] does, so the two costs can be told apart.
#[derive(Default)]
pub struct LinearDispatcher {
    handlers: Vec<LinearEntry>,
    counted: bool,
}

struct LinearEntry {
    index: u32,
    handler: Arc<dyn MsrHandler>,
    exits: AtomicU64,
}

impl LinearDispatcher {
    /// An empty table, without counters (QEMU).
    pub fn new() -> LinearDispatcher {
        LinearDispatcher::default()
    }

    /// An empty table that counts every exit per handler.
    pub fn with_counters() -> LinearDispatcher {
        LinearDispatcher {
            handlers: Vec::new(),
            counted: true,
        }
    }

    /// Appends a handler for reads and writes of `index`.
    pub fn handle(&mut self, index: u32, handler: impl MsrHandler + 'static) {
        self.handlers.push(LinearEntry {
            index,
            handler: Arc::new(handler),
            exits: AtomicU64::new(0),
        });
    }

    /// Exits each handler took, in registration order (all 0 without counters).
    pub fn exit_counts(&self) -> Vec<u64> {
        self.handlers
            .iter()
            .map(|h| h.exits.load(Relaxed))
            .collect()
    }

    fn find(&self, index: u32) -> Option<&LinearEntry> {
        for h in &self.handlers {
            if h.index == index {
                if self.counted {
                    h.exits.fetch_add(1, Relaxed);
                }
                return Some(h);
            }
        }
        None
    }

    /// Completes an MSR exit as QEMU does; returns whether it was an MSR exit.
    pub fn dispatch(&self, vcpu: usize, exit: &mut VcpuExit<'_>) -> bool {
        match exit {
            VcpuExit::X86Rdmsr(e) => {
                let ctx = MsrContext {
                    vcpu,
                    index: e.index,
                    reason: e.reason,
                };
                *e.error = 1;
                if let Some(h) = self.find(e.index) {
                    if let Ok(v) = h.handler.read(&ctx) {
                        *e.data = v;
                        *e.error = 0;
                    }
                }
                true
            }
            VcpuExit::X86Wrmsr(e) => {
                let ctx = MsrContext {
                    vcpu,
                    index: e.index,
                    reason: e.reason,
                };
                *e.error = 1;
                if let Some(h) = self.find(e.index) {
                    *e.error = u8::from(h.handler.write(&ctx, e.data).is_err());
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_decide_as_the_filter() {
        for n in [1, 4, 16] {
            let filter = lookup_filter(n);
            assert_eq!(filter.range_count(), n);
            let kernel = KernelFilter::new(&filter);
            let map = BTreeMapFilter::new(&filter).unwrap();
            assert!(!map.is_empty());
            let probes = lookup_probes(&filter, 4096);
            let mut hits = 0;
            for &(index, access) in &probes {
                let want = filter.decide(index, access);
                assert_eq!(kernel_scan(&kernel, index, access), want, "{index:#x}");
                assert_eq!(map.decide(index, access), want, "{index:#x}");
                let hit = filter.ranges().iter().any(|r| r.matches(index, access));
                hits += usize::from(hit);
            }
            assert_eq!(hits, probes.len() / 2, "half the probes hit");
            let denies = probes
                .iter()
                .filter(|&&(i, a)| filter.decide(i, a) == Action::Deny)
                .count();
            assert!(denies > probes.len() / 8, "{n} ranges: {denies} denies");
        }
        // x2APIC MSRs and the edges of the MSR space.
        let filter = lookup_filter(16);
        let kernel = KernelFilter::new(&filter);
        let map = BTreeMapFilter::new(&filter).unwrap();
        for index in [0, 0x7ff, 0x800, 0x8ff, 0x900, 0x6fff, 0x7000, u32::MAX] {
            for access in AccessType::ALL {
                let want = filter.decide(index, access);
                assert_eq!(kernel_scan(&kernel, index, access), want);
                assert_eq!(map.decide(index, access), want);
            }
        }
    }

    #[test]
    fn linear_dispatcher_completes_as_the_dispatcher() {
        let DispatchSetup {
            msrs,
            ours,
            uncounted,
            linear,
            counted,
            btreemap,
        } = dispatch_setup(16);
        for index in msrs.iter().copied().chain([0x4000_0101, 0x10]) {
            let a = read_exit(index, |e| {
                ours.dispatch(0, e);
            });
            let b = read_exit(index, |e| {
                linear.dispatch(0, e);
            });
            let c = read_exit(index, |e| {
                counted.dispatch(0, e);
            });
            assert_eq!(a, b, "{index:#x}");
            assert_eq!(a, c, "{index:#x}");
            let d = read_exit(index, |e| {
                btreemap.dispatch(0, e);
            });
            assert_eq!(a, d, "{index:#x}");
            let u = read_exit(index, |e| {
                uncounted.dispatch(0, e);
            });
            assert_eq!(a, u, "{index:#x}");
            assert_eq!(a.1, u8::from(!msrs.contains(&index)));
        }
        let ours_counts: Vec<u64> = ours.handler_stats().iter().map(|h| h.reads).collect();
        assert_eq!(counted.exit_counts(), ours_counts);
        assert_eq!(linear.exit_counts(), vec![0; msrs.len()]);
    }
}
