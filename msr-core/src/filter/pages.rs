//! The paged index of [`Filter::decide`](super::Filter::decide): the kernel's decision,
//! resolved ahead of time into one bitmap per 4096-MSR page and access type, found through a
//! collision-free hash of the page number (the page's low bits, mixed with two higher parts of
//! it: three shifts, two exclusive ors and a mask).
//!
//! The kernel scans its ranges in slot order for every access. Here the scan is done once, when
//! the filter is built: for each page a used range touches (at most 4 per range, so at most 64,
//! and page 0 for the x2APIC MSRs under default deny) and each access type, a 4096-bit bitmap
//! holds the decision for every MSR of the page, with the first-come rule, the default action
//! and the x2APIC exemption already applied. Pages no range touches take the default action. A
//! lookup reads the page's bucket (its key, and the row of its bitmap); if the page is there,
//! one word of that bitmap, and the bit is the answer: two dependent steps.
//!
//! Identical bitmaps are stored once (the all-allow and all-deny pages always exist), and the
//! store holds [`STORE`] of them. A filter that needs more, or whose pages none of the hashes
//! tried puts in buckets of their own, keeps the scan (see `Lookup` in `filter.rs`).

use crate::abi::{MAX_RANGES, X2APIC_FIRST, X2APIC_LAST};
use crate::{AccessType, Action};

use super::Range;

/// MSRs per page: a page is `index >> PAGE_SHIFT`.
const PAGE_SHIFT: u32 = 12;
/// MSRs per page.
const PAGE_MSRS: u32 = 1 << PAGE_SHIFT;
/// Bitmap words per page.
const PAGE_WORDS: usize = (PAGE_MSRS / 64) as usize;
/// log2 of the bucket count.
const BUCKET_BITS: u32 = 9;
/// Buckets of the hash table: about eight times the most pages a filter can touch, so that one
/// of the hashes tried (the identity and 171 pairs of shifts) is usually collision-free.
const BUCKETS: usize = 1 << BUCKET_BITS;
/// Page bitmaps stored, the two uniform ones included: 16 KiB. Filters whose ranges sit in a
/// few regions of the MSR space need few (the 16-range filter of the `lookup` benchmark needs
/// about 15); a filter with more keeps the scan. The index is part of every `Filter`, whose
/// size matters on the stack.
pub(super) const STORE: usize = 32;
/// Id of the all-allow page bitmap; id 0 is the all-deny one. Both are stored from the start,
/// so that uniform pages share them.
const ALL_ALLOW: u8 = 1;
/// Pages a filter can touch: a range of at most 0x3000 MSRs touches at most 4 pages; page 0
/// may be added for the x2APIC MSRs.
const MAX_PAGES: usize = MAX_RANGES * 4 + 1;
/// The shifts a hash may use besides [`PAGE_SHIFT`]: each keeps only page bits.
const HASH_SHIFTS: core::ops::RangeInclusive<u32> = PAGE_SHIFT + 1..=31;

/// The hashes tried, in order: the page's low bits alone (equal shifts cancel), then every pair
/// of distinct shifts.
fn hashes() -> impl Iterator<Item = [u32; 2]> {
    let last = *HASH_SHIFTS.end();
    core::iter::once([last, last])
        .chain(HASH_SHIFTS.flat_map(move |t| (t + 1..=last).map(move |u| [t, u])))
}
/// The key of a bucket no page uses: above every page number (pages are below 2^20).
const NO_PAGE: u32 = u32::MAX;

/// The paged index. Built by [`Pages::build`]; meaningful only when that returned true.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Pages {
    /// The hash's two shifts (see [`bucket`]).
    shifts: [u32; 2],
    /// Per bucket: the page it holds, or [`NO_PAGE`].
    keys: [u32; BUCKETS],
    /// Per access type (reads, writes) and bucket: where the page's bitmap starts in `store`
    /// (a word index, so that a lookup adds the word and loads; no multiplication on the way).
    rows: [[u16; BUCKETS]; 2],
    /// The distinct page bitmaps, [`PAGE_WORDS`] words each; bit `i` of the bitmap starting at
    /// word `row` is the decision for MSR `page * 4096 + i` (1 allows).
    store: [u64; STORE * PAGE_WORDS],
    /// Bitmaps in use in `store`.
    stored: usize,
}

impl Pages {
    /// An index that decides nothing yet (every bucket empty, the store's two uniform pages).
    pub(super) const EMPTY: Pages = {
        let mut store = [0; STORE * PAGE_WORDS];
        let mut word = ALL_ALLOW as usize * PAGE_WORDS;
        while word < (ALL_ALLOW as usize + 1) * PAGE_WORDS {
            store[word] = u64::MAX;
            word += 1;
        }
        Pages {
            shifts: [31, 31],
            keys: [NO_PAGE; BUCKETS],
            rows: [[0; BUCKETS]; 2],
            store,
            stored: 2,
        }
    };

    /// Resolves `ranges` (in slot order, the kernel's) into page bitmaps. Returns false, leaving
    /// the index unusable, when the pages need more than [`STORE`] distinct bitmaps or none of
    /// the hashes tried puts them in buckets of their own.
    pub(super) fn build(&mut self, default: Action, ranges: &[Range; MAX_RANGES]) -> bool {
        self.build_with(default, ranges, hashes())
    }

    /// [`build`](Self::build), trying the hashes `candidates`.
    fn build_with(
        &mut self,
        default: Action,
        ranges: &[Range; MAX_RANGES],
        mut candidates: impl Iterator<Item = [u32; 2]>,
    ) -> bool {
        *self = Pages::EMPTY;

        let mut pages = heapless::Vec::<u32, MAX_PAGES>::new();
        let mut add = |page: u32| {
            if let Err(at) = pages.binary_search(&page) {
                // At most 4 pages per range and page 0: the capacity holds them all.
                let _ = pages.insert(at, page);
            }
        };
        for r in ranges {
            if let Some((first, end)) = r.span() {
                for page in (first >> PAGE_SHIFT)..=((end - 1) >> PAGE_SHIFT) {
                    add(page);
                }
            }
        }
        if default == Action::Deny {
            // The x2APIC MSRs are allowed whatever the default; only page 0 holds them.
            add(X2APIC_FIRST >> PAGE_SHIFT);
        }

        let mut ids = [[0u8; 2]; MAX_PAGES];
        for (&page, ids) in pages.iter().zip(ids.iter_mut()) {
            for access in AccessType::ALL {
                let bitmap = resolve(page, access, default, ranges);
                let Some(id) = self.intern(&bitmap) else {
                    return false;
                };
                ids[access as usize] = id;
            }
        }

        let Some(shifts) = candidates.find(|&shifts| perfect(&pages, shifts)) else {
            return false;
        };
        self.shifts = shifts;
        for (&page, ids) in pages.iter().zip(ids.iter()) {
            let b = bucket(page << PAGE_SHIFT, shifts);
            self.keys[b] = page;
            for (rows, &id) in self.rows.iter_mut().zip(ids) {
                rows[b] = row(id);
            }
        }
        true
    }

    /// The id of `bitmap` in the store, storing it if it is new; `None` if the store is full.
    fn intern(&mut self, bitmap: &[u64; PAGE_WORDS]) -> Option<u8> {
        let mut stored = self.store.chunks_exact(PAGE_WORDS).take(self.stored);
        if let Some(id) = stored.position(|b| b == bitmap) {
            return Some(id as u8);
        }
        if self.stored == STORE {
            return None;
        }
        let at = self.stored * PAGE_WORDS;
        self.store[at..at + PAGE_WORDS].copy_from_slice(bitmap);
        self.stored += 1;
        Some((self.stored - 1) as u8)
    }

    /// The kernel's decision for `index` and `access` (see [`Filter::decide`](super::Filter::decide))
    /// in a filter of default action `default` (the one the index was built with).
    ///
    /// A page no range touches takes the default at once, on a branch: when the processor
    /// predicts it, the next step runs ahead without waiting for the bucket (measured: a
    /// conditional move there made a chain of dependent lookups 1.5x slower). A touched page
    /// costs a second load, its bitmap word; no multiplication on the way.
    #[inline(always)]
    pub(super) fn decide(&self, index: u32, access: AccessType, default: Action) -> Action {
        let page = index >> PAGE_SHIFT;
        let b = bucket(index, self.shifts);
        if self.keys[b] != page {
            return default;
        }
        let row = self.rows[access as usize][b];
        // `row + word` is below the store's length by construction; the bounds check that
        // stays is a branch never taken, which the load does not wait for.
        let word = self.store[usize::from(row) + (index / 64) as usize % PAGE_WORDS];
        Action::from_bit(word >> (index % 64))
    }
}

/// Where bitmap `id` starts in the store (below `STORE * PAGE_WORDS`, 2048).
fn row(id: u8) -> u16 {
    u16::from(id) * PAGE_WORDS as u16
}

/// The bucket of the page holding MSR `index`: the page number's low bits, mixed with higher
/// page bits by `shifts` (both above [`PAGE_SHIFT`]; equal shifts cancel). Three single-cycle
/// operations on the way, where a multiplicative hash costs five.
#[inline(always)]
fn bucket(index: u32, [t, u]: [u32; 2]) -> usize {
    ((index >> PAGE_SHIFT ^ index >> t ^ index >> u) as usize) % BUCKETS
}

/// Whether `shifts` put every page in a bucket of its own.
fn perfect(pages: &[u32], shifts: [u32; 2]) -> bool {
    let mut used = [0u64; BUCKETS / 64];
    pages.iter().all(|&page| {
        let b = bucket(page << PAGE_SHIFT, shifts);
        let (word, bit) = (b / 64, 1u64 << (b % 64));
        let free = used[word] & bit == 0;
        used[word] |= bit;
        free
    })
}

/// The kernel's decision for every MSR of `page` and `access`: the default, overwritten by each
/// range that speaks for `access`, last slot first so that the first slot wins; the x2APIC MSRs
/// allowed.
fn resolve(
    page: u32,
    access: AccessType,
    default: Action,
    ranges: &[Range; MAX_RANGES],
) -> [u64; PAGE_WORDS] {
    let fill = match default {
        Action::Allow => u64::MAX,
        Action::Deny => 0,
    };
    let mut bitmap = [fill; PAGE_WORDS];
    let page_first = u64::from(page) << PAGE_SHIFT;
    let page_end = page_first + u64::from(PAGE_MSRS);
    for r in ranges.iter().rev() {
        let Some((first, end)) = r.span() else {
            continue;
        };
        if !r.flags().includes(access) {
            continue;
        }
        let from = u64::from(first).max(page_first);
        let to = u64::from(end).min(page_end);
        if from < to {
            copy_bits(
                &mut bitmap,
                (from - page_first) as u32,
                r.bitmap_words(),
                (from - u64::from(first)) as u32,
                (to - from) as u32,
            );
        }
    }
    let x2apic_first = u64::from(X2APIC_FIRST);
    let x2apic_end = u64::from(X2APIC_LAST) + 1;
    if page_first < x2apic_end && x2apic_first < page_end {
        let from = x2apic_first.max(page_first) - page_first;
        let to = x2apic_end.min(page_end) - page_first;
        super::set_bits(&mut bitmap, from as u32, to as u32);
    }
    bitmap
}

/// The 64 bits of `src` from bit `at` on, as one word (bits past `src` read 0).
fn read_bits(src: &[u64], at: u32) -> u64 {
    let word = (at / 64) as usize;
    let shift = at % 64;
    let low = src.get(word).copied().unwrap_or(0) >> shift;
    let high = if shift == 0 {
        0
    } else {
        src.get(word + 1).copied().unwrap_or(0) << (64 - shift)
    };
    low | high
}

/// Copies `len` bits of `src` from bit `src_at` into `dst` from bit `dst_at`.
fn copy_bits(dst: &mut [u64; PAGE_WORDS], dst_at: u32, src: &[u64], src_at: u32, len: u32) {
    let mut done = 0;
    while done < len {
        let at = dst_at + done;
        let shift = at % 64;
        let count = (64 - shift).min(len - done);
        let mask = if count == 64 {
            u64::MAX
        } else {
            ((1u64 << count) - 1) << shift
        };
        let bits = read_bits(src, src_at + done) << shift;
        let word = &mut dst[(at / 64) as usize];
        *word = (*word & !mask) | (bits & mask);
        done += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_bits_copies_exactly_the_span() {
        let src: [u64; 3] = [0xdead_beef_0123_4567, 0x89ab_cdef_fedc_ba98, u64::MAX];
        for (dst_at, src_at, len) in [(0, 0, 64), (3, 70, 100), (63, 1, 2), (100, 5, 150)] {
            let mut dst = [0u64; PAGE_WORDS];
            copy_bits(&mut dst, dst_at, &src, src_at, len);
            for bit in 0..PAGE_MSRS {
                let got = dst[(bit / 64) as usize] >> (bit % 64) & 1;
                let want = if (dst_at..dst_at + len).contains(&bit) {
                    let s = src_at + bit - dst_at;
                    src[(s / 64) as usize] >> (s % 64) & 1
                } else {
                    0
                };
                assert_eq!(got, want, "bit {bit} of copy ({dst_at}, {src_at}, {len})");
            }
        }
    }

    /// The hashes tried: the identity once, then each pair of distinct shifts once.
    #[test]
    fn each_hash_is_tried_once() {
        let all: std::vec::Vec<[u32; 2]> = hashes().collect();
        assert_eq!(all.len(), 1 + 19 * 18 / 2);
        for (i, h) in all.iter().enumerate() {
            assert!(!all[..i].contains(h), "{h:?} twice");
        }
    }

    /// When no hash tried puts the pages in buckets of their own, the index is not built (and
    /// the filter keeps the scan: `Lookup::build` uses it only when `build` says so). Two pages
    /// 2^9 apart share a bucket under the identity hash.
    #[test]
    fn no_collision_free_hash_means_no_index() {
        let bitmap = [0u8; 8];
        let ranges =
            [(0x1000u32, 1u32), (0x20_1000, 1)].map(|(base, nmsrs)| super::super::RawRange {
                flags: 3,
                base,
                nmsrs,
                bitmap: &bitmap,
            });
        let filter = super::super::Filter::from_raw(&super::super::RawFilter {
            flags: 0,
            ranges: &ranges,
        })
        .unwrap();
        let mut index = Pages::EMPTY;
        let identity = [31, 31];
        assert!(!index.build_with(Action::Allow, filter.ranges(), core::iter::once(identity)));
        assert!(index.build_with(Action::Allow, filter.ranges(), hashes()));
        assert_ne!(index.shifts, identity);
    }

    #[test]
    fn buckets_depend_on_the_page_only() {
        for shifts in [[13, 13], [13, 31], [20, 27]] {
            for page in [0u32, 1, 0xc_0000, 0xf_ffff] {
                let first = page << PAGE_SHIFT;
                assert_eq!(bucket(first, shifts), bucket(first | 0xfff, shifts));
            }
        }
        // Equal shifts cancel: the page's low bits.
        assert_eq!(bucket(0x4_5000, [17, 17]), 0x45);
    }
}
