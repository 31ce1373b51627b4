//! The dispatcher's hot structures: which handler takes an access to an MSR
//! ([`HandlerIndex`]), the handlers themselves as a call needs them ([`HandlerValues`]), and exit
//! counters that vCPU threads update without sharing a cache line ([`ShardedCounters`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::MsrHandler;

/// MSRs per page of the direct table.
const PAGE_BITS: u32 = 12;
const PAGE_MSRS: usize = 1 << PAGE_BITS;
/// Spans up to this many MSRs go into direct pages; longer ones are searched.
const SMALL_SPAN: u64 = PAGE_MSRS as u64;
/// Page keys scanned linearly up to this many; binary search beyond.
const SCAN_KEYS: usize = 8;

/// One handler's MSRs for one access type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub first: u32,
    pub last: u32,
    /// The handler's position in the dispatcher.
    pub entry: u32,
}

/// Which handler takes an access to an MSR, for one access type: a direct table per 4096-MSR
/// page that holds handled MSRs (one load after finding the page, whatever the number of
/// handlers), and a sorted search for spans longer than a page or when the pages would take more
/// memory than the budget (`max(64, handlers / 256)` pages of 8 or 16 KiB).
#[derive(Debug, Default)]
pub(crate) struct HandlerIndex {
    /// Sorted page numbers (`index >> 12`).
    keys: Box<[u32]>,
    /// `keys.len()` pages of `PAGE_MSRS` slots: handler position + 1, or 0.
    slots: Slots,
    /// Spans not in the pages, sorted by `first`, disjoint.
    spans: Box<[Span]>,
}

/// The direct pages' slots: 16 bits each (8 KiB a page) while every handler position + 1 fits,
/// else 32 (16 KiB).
#[derive(Debug)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Default for Slots {
    fn default() -> Slots {
        Slots::Narrow(Box::default())
    }
}

impl Slots {
    /// Slot `i`: a handler position + 1, or 0.
    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Slots::Narrow(s) => u32::from(s[i]),
            Slots::Wide(s) => s[i],
        }
    }

    /// Sets slot `i` to `value`, which fits (see [`HandlerIndex::new`]).
    fn set(&mut self, i: usize, value: u32) {
        match self {
            Slots::Narrow(s) => s[i] = u16::try_from(value).expect("checked to fit in 16 bits"),
            Slots::Wide(s) => s[i] = value,
        }
    }
}

impl HandlerIndex {
    /// Builds the index of `spans`, which must be disjoint.
    pub fn new(mut spans: Vec<Span>) -> HandlerIndex {
        spans.sort_unstable_by_key(|s| s.first);
        let small = |s: &Span| u64::from(s.last) - u64::from(s.first) < SMALL_SPAN;
        let mut keys: Vec<u32> = spans
            .iter()
            .filter(|s| small(s))
            .flat_map(|s| (s.first >> PAGE_BITS)..=(s.last >> PAGE_BITS))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let budget = (spans.len() / 256).max(64);
        if keys.len() > budget {
            // Spread too thin for direct pages: search everything.
            return HandlerIndex {
                spans: spans.into_boxed_slice(),
                ..HandlerIndex::default()
            };
        }
        // 16-bit slots while every stored value (a handler position + 1) fits: the positions
        // are among all the dispatcher's handlers, not only this access type's.
        let narrow = spans.iter().all(|s| s.entry < u32::from(u16::MAX));
        let mut slots = if narrow {
            Slots::Narrow(vec![0; keys.len() * PAGE_MSRS].into_boxed_slice())
        } else {
            Slots::Wide(vec![0; keys.len() * PAGE_MSRS].into_boxed_slice())
        };
        let mut rest = Vec::new();
        for span in spans {
            if !small(&span) {
                rest.push(span);
                continue;
            }
            for index in span.first..=span.last {
                let page = keys
                    .binary_search(&(index >> PAGE_BITS))
                    .expect("every page of a small span is a key");
                slots.set(
                    page * PAGE_MSRS + (index as usize & (PAGE_MSRS - 1)),
                    span.entry + 1,
                );
            }
        }
        HandlerIndex {
            keys: keys.into_boxed_slice(),
            slots,
            spans: rest.into_boxed_slice(),
        }
    }

    /// The handler position taking `index`, if any.
    #[inline]
    pub fn get(&self, index: u32) -> Option<usize> {
        if let Some(page) = self.page(index >> PAGE_BITS) {
            let slot = self
                .slots
                .get(page * PAGE_MSRS + (index as usize & (PAGE_MSRS - 1)));
            if slot != 0 {
                return Some(slot as usize - 1);
            }
        }
        if self.spans.is_empty() {
            return None;
        }
        let i = self.spans.partition_point(|s| s.first <= index);
        let span = self.spans.get(i.checked_sub(1)?)?;
        (span.last >= index).then_some(span.entry as usize)
    }

    #[inline]
    fn page(&self, key: u32) -> Option<usize> {
        let keys = &self.keys;
        if keys.len() <= SCAN_KEYS {
            keys.iter().position(|&k| k == key)
        } else {
            // Branch-free binary search: the last position whose key is <= `key`.
            let mut base = 0;
            let mut len = keys.len();
            while len > 1 {
                let half = len / 2;
                if keys[base + half] <= key {
                    base += half;
                }
                len -= half;
            }
            (keys[base] == key).then_some(base)
        }
    }

    /// Bytes the index takes (for the docs' memory statement and tests).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let slots = match &self.slots {
            Slots::Narrow(s) => s.len() * 2,
            Slots::Wide(s) => s.len() * 4,
        };
        self.keys.len() * 4 + slots + self.spans.len() * std::mem::size_of::<Span>()
    }
}

/// The dispatcher's handlers by position, as a call needs them: the address of each handler's
/// value, beside the `Arc`s that own the values.
///
/// Calling through an `Arc<dyn MsrHandler>` first finds the value inside the `Arc`'s allocation,
/// at an offset that depends on the value's alignment, which only the vtable knows: one more
/// load, which the call waits on, per exit. The address taken once at build time skips it
/// (measured at 4,096 handlers: about 0.5 ns of the 6.5 an exit took; `BENCHMARKS.md`).
pub(crate) struct HandlerValues {
    /// Owns the values `values` points at; never changed after [`HandlerValues::new`].
    arcs: Box<[Arc<dyn MsrHandler>]>,
    /// `values[k] == Arc::as_ptr(&arcs[k])`.
    values: Box<[*const dyn MsrHandler]>,
}

// SAFETY: a `HandlerValues` is its `Arc`s plus pointers to their values. Sending it sends the
// `Arc`s, which are `Send` because `MsrHandler: Send + Sync`; the pointers are only ever turned
// into `&dyn MsrHandler` borrowed from it (`get`).
unsafe impl Send for HandlerValues {}
// SAFETY: shared, it only hands out `&dyn MsrHandler`, which is `Send` because
// `MsrHandler: Sync`; nothing in it is written after `new`.
unsafe impl Sync for HandlerValues {}

impl HandlerValues {
    /// The values of `handlers`, in order: position `k` is `handlers[k]`.
    pub fn new(handlers: impl IntoIterator<Item = Arc<dyn MsrHandler>>) -> HandlerValues {
        let arcs: Box<[Arc<dyn MsrHandler>]> = handlers.into_iter().collect();
        let values = arcs.iter().map(Arc::as_ptr).collect();
        HandlerValues { arcs, values }
    }

    /// The handler at position `k`.
    #[inline(always)]
    pub fn get(&self, k: usize) -> &dyn MsrHandler {
        debug_assert!(std::ptr::addr_eq(
            self.values[k],
            Arc::as_ptr(&self.arcs[k])
        ));
        // SAFETY: `values[k]` is `Arc::as_ptr(&arcs[k])` (`new`; neither slice changes after).
        // That `Arc` is owned by `self`, so its value is alive and never moved while `self` is
        // borrowed, and an `Arc`'s value is only ever shared: a `&` to it for the borrow of
        // `self` is what `&*self.arcs[k]` would give.
        unsafe { &*self.values[k] }
    }
}

/// Per-handler exit counters (reads, writes, faults), one block per vCPU: vCPU `v < shards`
/// writes only its own block, with a plain load and store (no locked instruction, no cache line
/// shared with another vCPU); vCPUs beyond go to one shared block with atomic adds. Read by
/// summing the blocks.
///
/// A handled exit that succeeds writes one cell: the reads or writes count of its handler in
/// its vCPU's block. A block holds all the handlers' read counts, then all their write counts,
/// and faults are counted apart (a handler's refusal is the rarer path): the cells exits touch
/// stay dense, 8 bytes per handler and access type, so a guest that mostly reads (or mostly
/// writes) keeps a third of the counters in cache that three interleaved cells would need.
/// Every block starts on a 64-byte line of its own: blocks are whole lines of line-aligned
/// cells. A vCPU's blocks take `3 * 64 * ceil(handlers / 8)` bytes, about 24 per handler.
///
/// The per-vCPU blocks assume what the dispatcher documents: exits of one vCPU index are
/// dispatched by one thread at a time. Two threads dispatching for the same index at once may
/// lose a count, never corrupt anything.
#[derive(Debug)]
pub(crate) struct ShardedCounters {
    shards: usize,
    /// Cells per half block of `exits`: one per handler, rounded up to a 64-byte line.
    half: usize,
    /// `shards + 1` blocks of `2 * half` cells: the handlers' reads, then their writes.
    exits: Cells,
    /// Cells per block of `faults`: one per handler, rounded up to a 64-byte line.
    fault_stride: usize,
    /// `shards + 1` blocks: per handler, its faults.
    faults: Cells,
}

/// What a counter counts.
#[derive(Clone, Copy)]
pub(crate) enum Count {
    Read = 0,
    Write = 1,
    Fault = 2,
}

/// `n` cells rounded up to whole 64-byte lines.
fn line_cells(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Counters in whole 64-byte lines: cell 0 starts a line (the allocation is 8-byte aligned, so
/// up to 7 cells before it are skipped; a boxed slice never moves, so this holds for its life).
#[derive(Debug)]
struct Cells {
    cells: Box<[AtomicU64]>,
    /// Cells skipped at the start.
    first: usize,
}

impl Cells {
    /// `n` counters at 0.
    fn new(n: usize) -> Cells {
        let cells: Box<[AtomicU64]> = (0..n + 7).map(|_| AtomicU64::new(0)).collect();
        let first = (cells.as_ptr() as usize).wrapping_neg() % 64 / 8;
        Cells { cells, first }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Option<&AtomicU64> {
        self.cells.get(self.first + i)
    }
}

/// Adds one to a cell only this thread writes.
#[inline(always)]
fn bump_own(cell: &AtomicU64) {
    cell.store(cell.load(Relaxed).wrapping_add(1), Relaxed);
}

impl ShardedCounters {
    pub fn new(handlers: usize, shards: usize) -> ShardedCounters {
        let cells = Cells::new;
        let half = line_cells(handlers);
        let fault_stride = line_cells(handlers);
        ShardedCounters {
            shards,
            half,
            exits: cells(2 * half * (shards + 1)),
            fault_stride,
            faults: cells(fault_stride * (shards + 1)),
        }
    }

    /// Counts one exit of `handler` on `vcpu`, a read or a write. The dispatcher counts it before
    /// the handler runs, so that nothing of the count is live across the call; a refusal is
    /// counted after, apart ([`add_fault`](Self::add_fault)).
    #[inline]
    pub fn add_exit(&self, vcpu: usize, handler: usize, write: bool) {
        if vcpu < self.shards {
            let at = (2 * vcpu + usize::from(write)) * self.half + handler;
            if let Some(cell) = self.exits.get(at) {
                bump_own(cell);
            }
        } else {
            self.add_shared(vcpu, handler, write);
        }
    }

    /// A vCPU without a block of its own: the shared block, with an atomic add.
    #[cold]
    #[inline(never)]
    fn add_shared(&self, vcpu: usize, handler: usize, write: bool) {
        let at = (2 * vcpu.min(self.shards) + usize::from(write)) * self.half + handler;
        if let Some(cell) = self.exits.get(at) {
            cell.fetch_add(1, Relaxed);
        }
    }

    /// Counts a refusal (`Err(Fault)` or a panic) by `handler` on `vcpu`: the rarer path.
    #[cold]
    #[inline(never)]
    pub fn add_fault(&self, vcpu: usize, handler: usize) {
        let own = vcpu < self.shards;
        let at = vcpu.min(self.shards) * self.fault_stride + handler;
        if let Some(cell) = self.faults.get(at) {
            if own {
                bump_own(cell);
            } else {
                cell.fetch_add(1, Relaxed);
            }
        }
    }

    /// The sum over all blocks.
    pub fn sum(&self, handler: usize, what: Count) -> u64 {
        let (cells, stride, at) = match what {
            Count::Read | Count::Write => (
                &self.exits,
                2 * self.half,
                what as usize * self.half + handler,
            ),
            Count::Fault => (&self.faults, self.fault_stride, handler),
        };
        (0..=self.shards)
            .filter_map(|b| cells.get(b * stride + at))
            .map(|cell| cell.load(Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(list: &[(u32, u32)]) -> Vec<Span> {
        list.iter()
            .enumerate()
            .map(|(k, &(first, last))| Span {
                first,
                last,
                entry: k as u32,
            })
            .collect()
    }

    /// The index answers as a plain scan of the spans, at every edge, whichever structure
    /// holds them.
    #[test]
    fn index_answers_as_a_scan() {
        let cases: Vec<Vec<(u32, u32)>> = vec![
            vec![],
            vec![(0x10, 0x10)],
            vec![
                (0xfff, 0x1000),
                (0x2000, 0x2fff),
                (0x4000_0000, 0x4fff_ffff),
            ],
            vec![(0, 0), (u32::MAX, u32::MAX), (0x7fff_f000, 0x8000_0fff)],
            (0..3000u32)
                .map(|i| (i * 0x10_0000, i * 0x10_0000 + 1))
                .collect(),
            (0..70u32).map(|i| (i << 12, (i << 12) + 5)).collect(),
        ];
        for list in cases {
            let index = HandlerIndex::new(spans(&list));
            let mut probes: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1];
            for &(f, l) in &list {
                probes.extend([f.wrapping_sub(1), f, l, l.wrapping_add(1), f / 2 + l / 2]);
            }
            for p in probes {
                let want = list.iter().position(|&(f, l)| f <= p && p <= l);
                assert_eq!(index.get(p), want, "{p:#x} in {} spans", list.len());
            }
        }
    }

    #[test]
    fn dense_handlers_use_pages_and_sparse_ones_the_search() {
        let dense = HandlerIndex::new(spans(
            &(0..65_536u32)
                .map(|i| (0x4000_0000 + i, 0x4000_0000 + i))
                .collect::<Vec<_>>(),
        ));
        assert_eq!(dense.keys.len(), 16);
        assert!(matches!(dense.slots, Slots::Wide(_)));
        for i in [0u32, 1, 4095, 4096, 65_534, 65_535] {
            assert_eq!(dense.get(0x4000_0000 + i), Some(i as usize));
        }
        assert_eq!(dense.get(0x4001_0000), None);
        assert!(dense.spans.is_empty());
        assert!(dense.bytes() < 300 * 1024, "{}", dense.bytes());
        let sparse = HandlerIndex::new(spans(
            &(0..4096u32).map(|i| (i << 16, i << 16)).collect::<Vec<_>>(),
        ));
        assert!(sparse.keys.is_empty());
        assert_eq!(sparse.spans.len(), 4096);
        assert_eq!(sparse.get(5 << 16), Some(5));
        assert_eq!(sparse.get((5 << 16) + 1), None);
    }

    /// The slot width follows the largest handler position, not the number of spans: an
    /// access type with one span of position 65,536 (the dispatcher's other handlers take the
    /// other access) gets 32-bit slots; positions up to 65,534 get 16-bit ones. Either way
    /// every MSR finds its own handler.
    #[test]
    fn slots_hold_every_handler_position() {
        for (entry, narrow) in [
            (65_536u32, false),
            (65_535, false),
            (65_534, true),
            (7, true),
        ] {
            let list = [
                Span {
                    first: 0x2000_0000,
                    last: 0x2000_0000,
                    entry,
                },
                Span {
                    first: 0x2000_0002,
                    last: 0x2000_0003,
                    entry: 3,
                },
            ];
            let index = HandlerIndex::new(list.to_vec());
            assert_eq!(matches!(index.slots, Slots::Narrow(_)), narrow, "{entry}");
            assert_eq!(index.get(0x2000_0000), Some(entry as usize));
            assert_eq!(index.get(0x2000_0001), None);
            assert_eq!(index.get(0x2000_0003), Some(3));
        }
    }

    /// Each position calls its own handler, from another thread too, and the values stay alive
    /// as long as the `HandlerValues`, whoever else held their `Arc`s.
    #[test]
    fn handler_values_call_each_position_s_own_handler() {
        use crate::handlers::Constant;
        use crate::MsrContext;
        use kvm_ioctls::MsrExitReason;
        let table = HandlerValues::new(
            (0..100u64).map(|k| Arc::new(Constant::new(k * 3)) as Arc<dyn MsrHandler>),
        );
        let ctx = MsrContext {
            vcpu: 0,
            index: 0,
            reason: MsrExitReason::Filter,
        };
        let table = std::thread::spawn(move || {
            for k in 0..100 {
                assert_eq!(table.get(k).read(&ctx), Ok(k as u64 * 3));
            }
            table
        })
        .join()
        .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(table.get(99).read(&ctx), Ok(297)));
        });
    }

    /// Every block of every vCPU starts a 64-byte line: no line holds two vCPUs' counts.
    #[test]
    fn counter_blocks_start_on_lines_of_their_own() {
        for handlers in [1, 3, 8, 9] {
            let c = ShardedCounters::new(handlers, 3);
            let start = |cells: &Cells, at: usize| cells.get(at).unwrap().as_ptr() as usize % 64;
            for v in 0..=3 {
                assert_eq!(
                    start(&c.exits, 2 * v * c.half),
                    0,
                    "{handlers} reads of vCPU {v}"
                );
                assert_eq!(
                    start(&c.exits, (2 * v + 1) * c.half),
                    0,
                    "{handlers} writes {v}"
                );
                assert_eq!(
                    start(&c.faults, v * c.fault_stride),
                    0,
                    "{handlers} faults {v}"
                );
            }
        }
    }

    #[test]
    fn counters_sum_own_and_shared_blocks() {
        let c = ShardedCounters::new(3, 2);
        c.add_exit(0, 1, false);
        c.add_exit(1, 1, false);
        c.add_exit(7, 1, false);
        c.add_exit(7, 2, true);
        c.add_fault(7, 2);
        assert_eq!(c.sum(2, Count::Write), 1);
        assert_eq!(c.sum(1, Count::Read), 3);
        assert_eq!(c.sum(1, Count::Write), 0);
        assert_eq!(c.sum(2, Count::Fault), 1);
        assert_eq!(c.sum(0, Count::Read), 0);
    }
}
