//! Raw filter validation and decision on arbitrary filters: `Filter::from_raw` never panics;
//! an accepted filter decides every probe as a plain transcription of the kernel's
//! `kvm_msr_allowed()` scan over the raw ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msr_filter_core::{abi, AccessType, Action, Filter, RawFilter, RawRange};

/// The kernel's rule, written plainly from the raw input.
fn kernel_scan(flags: u32, ranges: &[RawRange<'_>], index: u32, access: AccessType) -> Action {
    if abi::is_x2apic(index) {
        return Action::Allow;
    }
    let bit = match access {
        AccessType::Read => abi::RANGE_READ,
        AccessType::Write => abi::RANGE_WRITE,
    };
    for r in ranges {
        if r.nmsrs == 0 || r.flags & bit == 0 {
            continue;
        }
        let end = r.base.wrapping_add(r.nmsrs);
        if r.base <= index && index < end {
            let offset = (index - r.base) as usize;
            let allowed = r.bitmap[offset / 8] & (1 << (offset % 8)) != 0;
            return if allowed { Action::Allow } else { Action::Deny };
        }
    }
    if flags & abi::DEFAULT_DENY != 0 {
        Action::Deny
    } else {
        Action::Allow
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let flags = u32::from(head & 3);
    // Ranges: 10 bytes of header (flags 1, base 4, nmsrs 2 + 1 scale, bitmap fill 2) each.
    let mut bitmaps: Vec<Vec<u8>> = Vec::new();
    let mut headers = Vec::new();
    for c in rest.chunks_exact(10).take(17) {
        let rflags = u32::from(c[0] & 7);
        let base = u32::from_le_bytes([c[1], c[2], c[3], c[4]]);
        let nmsrs = u32::from(u16::from_le_bytes([c[5], c[6]])) >> (c[7] & 3);
        let bytes = if c[8] & 0x80 != 0 {
            // Sometimes short, sometimes long: the kernel's verdict covers both.
            (c[8] & 0x7f) as usize
        } else {
            abi::bitmap_bytes(nmsrs).min(abi::MAX_BITMAP_BYTES)
        };
        bitmaps.push((0..bytes).map(|i| c[9].rotate_left(i as u32)).collect());
        headers.push((rflags, base, nmsrs));
    }
    let ranges: Vec<RawRange<'_>> = headers
        .iter()
        .zip(&bitmaps)
        .map(|(&(flags, base, nmsrs), bitmap)| RawRange {
            flags,
            nmsrs,
            base,
            bitmap,
        })
        .collect();
    let raw = RawFilter {
        flags,
        ranges: &ranges,
    };
    let Ok(filter) = Filter::from_raw(&raw) else {
        return;
    };
    let _ = filter.lints();
    let mut probes = vec![0, 0x7ff, 0x800, 0x8ff, 0x900, u32::MAX];
    for r in &ranges {
        for d in [0u32, 1, 63, 64] {
            probes.push(r.base.wrapping_add(d));
            probes.push(r.base.wrapping_add(r.nmsrs).wrapping_sub(d));
        }
    }
    for index in probes {
        for access in AccessType::ALL {
            assert_eq!(
                filter.decide(index, access),
                kernel_scan(flags, &ranges, index, access),
                "{index:#x} {access:?}"
            );
            assert_eq!(filter.explain(index, access).action, filter.decide(index, access));
        }
    }
});
