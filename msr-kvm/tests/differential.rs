//! Differential tests against the real kernel: `Filter::decide` must say exactly what KVM does
//! for random filters and boundary-biased probes, and `Filter::from_raw` must accept and refuse
//! exactly the filters `KVM_X86_SET_MSR_FILTER` accepts and refuses, with the same errno.
//!
//! Deterministic: the seed is printed and can be replaced with `MSR_DIFF_SEED=<hex>`.

mod common;

use std::fmt::Write as _;
use std::time::Instant;

use common::*;
use kvm_ioctls::{MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags};
use msr_filter_core::{
    abi, Access, AccessType, Action, Filter, InvalidFilter, Policy, RawFilter, RawRange, Rule,
};
use msr_filter_kvm::guest::{GuestResult, GuestVm, MsrAccess};
use msr_filter_kvm::MsrInterception;

const DEFAULT_SEED: u64 = 0x6d73_722d_6469_6666;

fn seed() -> u64 {
    match std::env::var("MSR_DIFF_SEED") {
        Ok(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("MSR_DIFF_SEED={s}: {e}")),
        Err(_) => DEFAULT_SEED,
    }
}

/// Places where MSRs (and kernel special cases) live; bases are drawn near them.
const AREAS: [u32; 22] = [
    0x0,
    0x10,
    0x100,
    0x1f0,
    0x7c0,
    0x7f0,
    0x800,
    0x8f0,
    0x8ff,
    0xc00,
    0x2fc0,
    0x4000_0000,
    0x4b56_4d00,
    0x474f_4f00,
    0xc000_0000,
    0xc000_0080,
    0xc000_0100,
    0xc001_0000,
    0xdead_be00,
    0xffff_d000,
    0xffff_ff00,
    0xffff_fff0,
];

fn near_area(rng: &mut Rng) -> u32 {
    rng.pick(&AREAS).wrapping_add(rng.below(0x100))
}

/// A range length: mostly short, sometimes up to the kernel's 0x3000.
fn length(rng: &mut Rng) -> u32 {
    match rng.below(8) {
        0..=2 => 1 + rng.below(8),
        3..=4 => 1 + rng.below(0x80),
        5..=6 => 1 + rng.below(0x800),
        _ => 1 + rng.below(abi::MAX_NMSRS),
    }
}

fn random_bitmap(rng: &mut Rng, bytes: usize) -> Vec<u8> {
    let mode = rng.below(5);
    (0..bytes)
        .map(|_| match mode {
            0 => 0,
            1 => 0xff,
            2 => rng.u32() as u8,
            // Mostly allow, a few denies.
            3 => !(1u8 << rng.below(8)) | if rng.chance(1, 2) { 0xff } else { 0 },
            _ => (rng.u32() & rng.u32()) as u8,
        })
        .collect()
}

/// A random policy of up to 6 rules near interesting MSRs. Denies over x2APIC MSRs, which no
/// filter can express, become allows.
fn random_policy(rng: &mut Rng) -> Policy<16> {
    let default = if rng.chance(1, 2) {
        Action::Allow
    } else {
        Action::Deny
    };
    let mut policy = Policy::new(default);
    for _ in 0..1 + rng.below(6) {
        let first = near_area(rng);
        let last = first.saturating_add(length(rng) - 1);
        let access = rng.pick(&[Access::READ, Access::WRITE, Access::READ_WRITE]);
        let mut action = if rng.chance(1, 2) {
            Action::Allow
        } else {
            Action::Deny
        };
        if action == Action::Deny && first <= abi::X2APIC_LAST && last >= abi::X2APIC_FIRST {
            action = Action::Allow;
        }
        policy.push(Rule::new(first, last, access, action)).unwrap();
    }
    policy
}

/// One raw range, owned: (flags, base, nmsrs, bitmap bytes).
type OwnedRange = (u32, u32, u32, Vec<u8>);

fn raw_ranges(ranges: &[OwnedRange]) -> Vec<RawRange<'_>> {
    ranges
        .iter()
        .map(|(flags, base, nmsrs, bitmap)| RawRange {
            flags: *flags,
            nmsrs: *nmsrs,
            base: *base,
            bitmap,
        })
        .collect()
}

fn describe(flags: u32, ranges: &[OwnedRange]) -> String {
    let mut s = format!("flags {flags:#x}");
    for (slot, (f, base, nmsrs, bitmap)) in ranges.iter().enumerate() {
        let ones: u32 = bitmap.iter().map(|b| b.count_ones()).sum();
        let _ = write!(
            s,
            "\n  slot {slot}: flags {f:#x} base {base:#x} nmsrs {nmsrs:#x} ({} bytes, {ones} bits set)",
            bitmap.len()
        );
    }
    s
}

/// A valid raw filter with overlaps, empty slots, wrapping ranges, ranges ending exactly at
/// 2^32 and ranges over the x2APIC MSRs.
fn random_valid_raw(rng: &mut Rng) -> (u32, Vec<OwnedRange>) {
    let flags = rng.below(2);
    let mut ranges: Vec<OwnedRange> = Vec::new();
    for _ in 0..1 + rng.below(16) {
        if rng.chance(1, 8) {
            // Empty slot: the kernel skips it whatever its flags say.
            ranges.push((rng.below(8), rng.u32(), 0, Vec::new()));
            continue;
        }
        let (base, nmsrs) = match rng.below(12) {
            0 => (0xffff_fffa, 16),
            1 => {
                let n = 1 + rng.below(0x40);
                (0u32.wrapping_sub(n), n)
            }
            2 => (0x7c0 + rng.below(0x100), 0x20 + rng.below(0x200)),
            3 => (0x800, 0x100),
            4 if !ranges.is_empty() => {
                let (_, b, n, _) = ranges[rng.below(ranges.len() as u32) as usize];
                (
                    b.wrapping_add(rng.below(n.max(1)))
                        .wrapping_sub(rng.below(4)),
                    length(rng),
                )
            }
            _ => (near_area(rng), length(rng)),
        };
        let bitmap = random_bitmap(rng, abi::bitmap_bytes(nmsrs));
        ranges.push((1 + rng.below(3), base, nmsrs, bitmap));
    }
    if flags == abi::DEFAULT_DENY && ranges.iter().all(|r| r.2 == 0) {
        ranges[0] = (3, 0xc000_0080, 5, vec![0xff; 8]);
    }
    (flags, ranges)
}

/// Probe points: every range edge (base - 1, base, base + 1, end - 1, end, in u32 arithmetic),
/// one point inside each range, the x2APIC edges, `extra`, then random points up to at least 64.
fn probes(rng: &mut Rng, filter: &Filter, extra: &[u32]) -> Vec<u32> {
    let mut v: Vec<u32> = vec![
        0,
        1,
        u32::MAX,
        u32::MAX - 1,
        0x7ff,
        0x800,
        0x801,
        0x8fe,
        0x8ff,
        0x900,
    ];
    v.extend_from_slice(extra);
    for (_, r) in filter.used_ranges() {
        let base = r.base();
        let end = base.wrapping_add(r.nmsrs());
        v.extend([
            base.wrapping_sub(1),
            base,
            base.wrapping_add(1),
            end.wrapping_sub(1),
            end,
            base.wrapping_add(rng.below(r.nmsrs())),
        ]);
    }
    v.sort_unstable();
    v.dedup();
    while v.len() < 64 {
        let p = if rng.chance(1, 2) {
            near_area(rng)
        } else {
            rng.u32()
        };
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

struct Divergence {
    filter_no: usize,
    origin: String,
    filter: String,
    index: u32,
    access: AccessType,
    model: Action,
    kernel: String,
}

#[test]
fn decide_matches_kernel_on_random_filters() {
    if skip_without_kvm() {
        return;
    }
    let seed = seed();
    println!("differential seed {seed:#x} (rerun with MSR_DIFF_SEED={seed:x})");
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    let mut g = GuestVm::new().unwrap();
    // FILTER only: an allowed access never exits, a denied one always does.
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();

    const PACKED: usize = 200;
    const RAW: usize = 200;
    let mut divergences: Vec<Divergence> = Vec::new();
    let mut probes_run = 0usize;
    let mut pack_retries = 0usize;
    let mut lint_kinds = [0usize; 4];
    let mut denied_seen = 0usize;

    for filter_no in 0..PACKED + RAW {
        let (filter, origin, extra, policy) = if filter_no < PACKED {
            let (policy, packed) = loop {
                let policy = random_policy(&mut rng);
                // Through the text format, as a user would write it.
                let text = policy.to_string();
                let reparsed: Policy<16> = Policy::parse(&text).unwrap();
                assert_eq!(reparsed, policy, "{text}");
                match reparsed.pack() {
                    Ok(packed) => break (reparsed, packed),
                    Err(_) => pack_retries += 1,
                }
            };
            let extra: Vec<u32> = policy
                .rules()
                .iter()
                .flat_map(|r| {
                    [
                        r.first.wrapping_sub(1),
                        r.first,
                        r.last,
                        r.last.wrapping_add(1),
                    ]
                })
                .collect();
            (
                packed.filter,
                format!("packed policy:\n{policy}"),
                extra,
                Some(policy),
            )
        } else {
            let (flags, ranges) = random_valid_raw(&mut rng);
            let raw = raw_ranges(&ranges);
            let filter = Filter::from_raw(&RawFilter {
                flags,
                ranges: &raw,
            })
            .unwrap_or_else(|e| panic!("seed {seed:#x}: generated an invalid filter: {e}"));
            (
                filter,
                format!("raw {}", describe(flags, &ranges)),
                Vec::new(),
                None,
            )
        };
        for lint in filter.lints() {
            let k = match lint {
                msr_filter_core::Lint::RangeWraps { .. } => 0,
                msr_filter_core::Lint::CoversX2apic { .. } => 1,
                msr_filter_core::Lint::Shadowed { .. } => 2,
                msr_filter_core::Lint::BitsBeyondNmsrs { .. } => 3,
                other => panic!("a lint this test does not know: {other}"),
            };
            lint_kinds[k] += 1;
        }
        let lints = msrs.install(&filter).unwrap_or_else(|e| {
            panic!("seed {seed:#x} filter {filter_no}: install: {e}\n{origin}")
        });
        assert_eq!(lints, filter.lints());
        if policy.is_some() {
            assert!(
                lints.is_empty(),
                "packed filters have no lints: {lints:?}\n{origin}"
            );
        }

        for index in probes(&mut rng, &filter, &extra) {
            for access in AccessType::ALL {
                let model = filter.decide(index, access);
                assert_eq!(filter.explain(index, access).action, model);
                if let Some(policy) = &policy {
                    assert_eq!(
                        policy.decide(index, access),
                        model,
                        "{index:#x} {access}\n{origin}"
                    );
                }
                let guest_access = match access {
                    AccessType::Read => MsrAccess::Read { index },
                    // Value 0: a write the filter lets through is harmless to this guest.
                    AccessType::Write => MsrAccess::Write { index, value: 0 },
                };
                let outcome = g.run(guest_access, &mut fail_exit).unwrap_or_else(|e| {
                    panic!(
                        "seed {seed:#x} filter {filter_no}: {guest_access:x?}: harness error {e}\n{origin}"
                    )
                });
                probes_run += 1;
                let kernel = match outcome.exit {
                    None => Some(Action::Allow),
                    Some(e)
                        if e.reason == MsrExitReason::Filter
                            && e.index == index
                            && e.is_write == (access == AccessType::Write)
                            && outcome.result == GuestResult::GeneralProtection =>
                    {
                        Some(Action::Deny)
                    }
                    Some(_) => None,
                };
                if kernel == Some(Action::Deny) {
                    denied_seen += 1;
                }
                if kernel != Some(model) {
                    divergences.push(Divergence {
                        filter_no,
                        origin: origin.clone(),
                        filter: filter.to_string(),
                        index,
                        access,
                        model,
                        kernel: format!("{outcome:x?}"),
                    });
                }
            }
        }
    }
    msrs.shutdown().unwrap();

    let filters = PACKED + RAW;
    println!(
        "differential: {filters} filters, {probes_run} probes, {} divergences",
        divergences.len()
    );
    println!(
        "  seed {seed:#x}; {pack_retries} random policies not packable (regenerated); \
         {denied_seen} probes denied; lints seen: wraps {}, x2apic {}, shadowed {}, bits beyond nmsrs {}; {:.1?}",
        lint_kinds[0],
        lint_kinds[1],
        lint_kinds[2],
        lint_kinds[3],
        started.elapsed()
    );
    for d in divergences.iter().take(20) {
        println!(
            "DIVERGENCE filter {} ({}):\n{}\n  MSR {:#x} {}: model {} but kernel {}",
            d.filter_no, d.origin, d.filter, d.index, d.access, d.model, d.kernel
        );
    }
    assert!(
        divergences.is_empty(),
        "{} divergences (seed {seed:#x}, rerun with MSR_DIFF_SEED={seed:x})",
        divergences.len()
    );
    // The generator really covered what it is meant to.
    assert!(probes_run >= filters * 64 * 2);
    assert!(
        denied_seen > probes_run / 10,
        "too few denials: {denied_seen}"
    );
    assert!(
        lint_kinds.iter().all(|&n| n > 0),
        "lint kinds not all covered: {lint_kinds:?}"
    );
}

/// What the kernel's `KVM_X86_SET_MSR_FILTER` would be expected to say, by category.
fn category(r: &Result<Filter, InvalidFilter>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(InvalidFilter::FilterFlags { .. }) => "filter flags",
        Err(InvalidFilter::DenyWithoutRanges) => "deny without ranges",
        Err(InvalidFilter::RangeFlags { .. }) => "range flags",
        Err(InvalidFilter::RangeNoAccess { .. }) => "range flags 0",
        Err(InvalidFilter::RangeTooLarge { .. }) => "nmsrs > 0x3000",
        Err(InvalidFilter::BitmapTooShort { .. }) => "bitmap too short",
        Err(InvalidFilter::TooManyRanges { .. }) => "too many ranges",
        Err(other) => panic!("a refusal this test does not know: {other}"),
    }
}

/// A random raw filter that may be invalid in every way the kernel checks. Bitmaps are
/// whole 64-bit words, `ceil(nmsrs / 64) * 8` bytes; a range with nmsrs > 0x3000 gets 0x608.
fn random_any_raw(rng: &mut Rng) -> (u32, Vec<OwnedRange>) {
    let flags = if rng.chance(4, 5) {
        rng.below(2)
    } else {
        let any = rng.u32() | 2;
        rng.pick(&[2, 3, 0x80, 0x8000_0000, 0x8000_0001, any])
    };
    if rng.chance(1, 10) {
        // DEFAULT_DENY and every range empty (possibly with garbage flags and bases).
        let n = rng.below(17) as usize;
        let ranges = (0..n)
            .map(|_| (rng.below(8), rng.u32(), 0, Vec::new()))
            .collect();
        return (abi::DEFAULT_DENY, ranges);
    }
    let mut ranges = Vec::new();
    for _ in 0..rng.below(17) {
        let nmsrs = match rng.below(20) {
            0..=3 => 0,
            4..=5 => {
                let any = 0x3001 + rng.below(1 << 20);
                rng.pick(&[0x3001, 0x3040, 0x3041, 0x8000, u32::MAX, any])
            }
            6 => abi::MAX_NMSRS,
            _ => length(rng),
        };
        let flags = if rng.chance(3, 4) {
            1 + rng.below(3)
        } else {
            let any = rng.u32();
            rng.pick(&[0, 4, 5, 7, 8, 0x100, any])
        };
        let bytes = if nmsrs == 0 {
            if rng.chance(1, 2) {
                0
            } else {
                8
            }
        } else if nmsrs <= abi::MAX_NMSRS {
            abi::bitmap_bytes(nmsrs)
        } else {
            abi::MAX_BITMAP_BYTES + 8
        };
        let base = if rng.chance(1, 2) {
            near_area(rng)
        } else {
            rng.u32()
        };
        ranges.push((flags, base, nmsrs, random_bitmap(rng, bytes)));
    }
    (flags, ranges)
}

#[test]
fn from_raw_matches_kernel_validation() {
    if skip_without_kvm() {
        return;
    }
    let seed = seed() ^ 0x5a5a_5a5a;
    println!("validation seed {seed:#x} (derived from MSR_DIFF_SEED)");
    let mut rng = Rng::new(seed);
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();

    const CASES: usize = 600;
    let mut tally: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut mismatches = Vec::new();
    let mut probes_run = 0;
    for case in 0..CASES {
        let (flags, ranges) = random_any_raw(&mut rng);
        let raw = raw_ranges(&ranges);
        let raw_filter = RawFilter {
            flags,
            ranges: &raw,
        };
        let model = Filter::from_raw(&raw_filter);
        *tally.entry(category(&model)).or_default() += 1;
        let kvm = to_kvm_filter(&raw_filter);

        msrs.set_exit_reasons(MsrExitReason::Filter).unwrap();
        // SAFETY: every range with 0 < nmsrs <= 0x3000 points at a live buffer of exactly
        // ceil(nmsrs / 64) * 8 bytes; ranges with larger nmsrs point at 0x608 bytes and are refused
        // by the kernel before it reads anything; empty ranges are skipped unread.
        let kernel = unsafe { raw_set_filter(msrs.vm(), &kvm) };
        let agree = match (&model, kernel) {
            (Ok(_), Ok(())) => true,
            (Err(e), Err(errno)) => e.errno() == Some(errno),
            _ => false,
        };
        if !agree {
            mismatches.push(format!(
                "case {case}: model {model:?}, kernel {kernel:?}\n{}",
                describe(flags, &ranges)
            ));
        }
        if let (Ok(filter), Ok(())) = (&model, kernel) {
            // Accepted: a few probes to check the kernel took it as the model did.
            let mut points = vec![0x800, 0xc000_0080];
            if let Some((_, r)) = filter.used_ranges().next() {
                points.extend([r.base(), r.base().wrapping_add(r.nmsrs() - 1)]);
            }
            for index in points {
                for access in AccessType::ALL {
                    let a = match access {
                        AccessType::Read => rd(index),
                        AccessType::Write => wr(index, 0),
                    };
                    let outcome = run_failing(&mut g, a);
                    probes_run += 1;
                    let kernel = match outcome.exit {
                        Some(e) if e.reason == MsrExitReason::Filter => Action::Deny,
                        _ => Action::Allow,
                    };
                    if kernel != filter.decide(index, access) {
                        mismatches.push(format!(
                            "case {case}: {a:x?}: model {}, kernel {outcome:x?}\n{filter}",
                            filter.decide(index, access)
                        ));
                    }
                }
            }
        }
        // Back to no filter, whatever happened.
        msrs.remove_filter().unwrap();
    }
    println!("validation: {CASES} raw filters ({probes_run} probes of accepted ones): {tally:?}, {} mismatches", mismatches.len());
    for m in mismatches.iter().take(20) {
        println!("MISMATCH {m}");
    }
    assert!(
        mismatches.is_empty(),
        "seed {seed:#x}: {} mismatches",
        mismatches.len()
    );
    for kind in [
        "accepted",
        "filter flags",
        "deny without ranges",
        "range flags",
        "range flags 0",
        "nmsrs > 0x3000",
    ] {
        assert!(
            tally.get(kind).copied().unwrap_or(0) >= 5,
            "too few '{kind}' cases: {tally:?}"
        );
    }
}

#[test]
fn bitmap_read_in_whole_words_efault_at_page_end() {
    if skip_without_kvm() {
        return;
    }
    let mut g = GuestVm::new().unwrap();
    let mut msrs = MsrInterception::new(g.kvm(), vm_handle(&g), MsrExitReason::empty()).unwrap();
    msrs.install(
        &Policy::<1>::parse("default allow\ndeny r GS_BASE\n")
            .unwrap()
            .pack()
            .unwrap()
            .filter,
    )
    .unwrap();
    let gs_filtered = exited(
        MsrExitReason::Filter,
        rd(GS_BASE),
        GuestResult::GeneralProtection,
    );
    assert_eq!(run_failing(&mut g, rd(GS_BASE)), gs_filtered);

    let page = PageEnd::new();
    let one = [RawRange {
        flags: 3,
        nmsrs: 1,
        base: FS_BASE,
        bitmap: page.last_byte(),
    }];
    let raw = RawFilter {
        flags: 0,
        ranges: &one,
    };
    let model = Filter::from_raw(&raw).unwrap_err();
    assert_eq!(
        model,
        InvalidFilter::BitmapTooShort {
            slot: 0,
            nmsrs: 1,
            needed: 8,
            given: 1
        }
    );
    assert_eq!(model.errno(), Some(libc::EFAULT));
    // SAFETY: the one-byte bitmap is the last byte of a readable page followed by a PROT_NONE
    // page; the kernel's 8-byte copy faults there and the ioctl fails with EFAULT.
    let kernel = unsafe { raw_set_filter(msrs.vm(), &to_kvm_filter(&raw)) };
    assert_eq!(kernel, Err(libc::EFAULT));
    // kvm-ioctls' safe wrapper checks ceil(nmsrs / 8) bytes, so it passes the 1-byte slice on.
    let wrapper = msrs.vm().set_msr_filter(
        MsrFilterDefaultAction::ALLOW,
        &[MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: FS_BASE,
            msr_count: 1,
            bitmap: page.last_byte(),
        }],
    );
    println!("raw ioctl: {kernel:?}; kvm-ioctls set_msr_filter: {wrapper:?}");
    assert_eq!(wrapper.map_err(|e| e.errno()), Err(libc::EFAULT));
    // The refused filters left the installed one alone.
    assert_eq!(run_failing(&mut g, rd(GS_BASE)), gs_filtered);
    assert_eq!(run_failing(&mut g, rd(FS_BASE)), no_exit(read_ok(0)));

    // A whole word ending at the same page end is fine for both.
    let word = [RawRange {
        bitmap: page.tail(8),
        ..one[0]
    }];
    let raw = RawFilter {
        flags: 0,
        ranges: &word,
    };
    let filter = Filter::from_raw(&raw).unwrap();
    assert_eq!(filter.decide(FS_BASE, AccessType::Read), Action::Deny);
    // SAFETY: the 8-byte bitmap lies wholly in the readable page.
    let kernel = unsafe { raw_set_filter(msrs.vm(), &to_kvm_filter(&raw)) };
    assert_eq!(kernel, Ok(()));
    // MsrInterception did not install this one: hand it the same filter so it knows.
    msrs.install(&filter).unwrap();
    assert_eq!(
        run_failing(&mut g, rd(FS_BASE)),
        exited(
            MsrExitReason::Filter,
            rd(FS_BASE),
            GuestResult::GeneralProtection
        )
    );
    assert_eq!(
        run_failing(&mut g, wr(FS_BASE, 0)),
        exited(
            MsrExitReason::Filter,
            wr(FS_BASE, 0),
            GuestResult::GeneralProtection
        )
    );
    assert_eq!(run_failing(&mut g, rd(GS_BASE)), no_exit(read_ok(0)));
    msrs.shutdown().unwrap();
}
