//! The filters of the kernel's selftest `userspace_msr_exit_test.c`, written as policies and
//! packed: the packing must decide exactly as the selftest's hand-made filter does, and is
//! compared with it in ranges and bitmap bytes.

use msr_filter_core::{AccessType, Filter, Policy, RawFilter, RawRange};

struct Case {
    name: &'static str,
    policy: &'static str,
    /// (ranges, bitmap bytes) of the selftest's own filter.
    selftest: (usize, usize),
    /// (ranges, bitmap bytes) we expect.
    packed: (usize, usize),
}

const CASES: [Case; 4] = [
    Case {
        name: "filter_allow",
        policy: "default allow\ndeny rw IA32_XSS\ndeny rw IA32_FLUSH_CMD\ndeny rw 0x474f4f00\n",
        selftest: (3, 24),
        // FLUSH_CMD (0x10b) and XSS (0xda0) are close enough for one range: fewer ranges come
        // first (the kernel scans them on every access), bytes second.
        packed: (2, 416),
    },
    Case {
        name: "filter_fs",
        policy: "default allow\ndeny r FS_BASE\n",
        selftest: (1, 8),
        packed: (1, 8),
    },
    Case {
        name: "filter_gs",
        policy: "default allow\ndeny r GS_BASE\n",
        selftest: (1, 8),
        packed: (1, 8),
    },
    Case {
        name: "filter_deny",
        policy: "default deny\n\
                 allow rw 0x0+0x3000\n\
                 deny  w  0x1fc\n\
                 allow rw 0x40000000+0x3000\n\
                 allow rw 0xc0000000+0x3000\n\
                 deny  r  SYSCALL_MASK\n\
                 deny  r  GS_BASE\n\
                 allow rw 0xdeadbeef\n",
        selftest: (6, 5 * 0x600 + 8),
        packed: (6, 3 * 0x600 + 8 + 16 + 8),
    },
];

/// The selftest's `filter_deny`, built as the selftest builds it (including its `deny_msr`, which
/// indexes bitmaps by `msr & 0x5ff`).
fn selftest_filter_deny() -> Filter {
    let full = vec![0xffu8; 0x600];
    let deny = |msr: u32| {
        let mut b = full.clone();
        let idx = (msr & 0x5ff) as usize;
        b[idx / 8] &= !(1 << (idx % 8));
        b
    };
    let write0 = deny(0x1fc);
    let read_c = {
        let mut b = deny(0xc000_0084);
        let idx = 0xc000_0101u32 & 0x5ff;
        b[idx as usize / 8] &= !(1 << (idx % 8));
        b
    };
    let deadbeef = [1u8, 0, 0, 0, 0, 0, 0, 0];
    let r = |flags, base, bitmap: &'static [u8]| RawRange {
        flags,
        nmsrs: if bitmap.len() == 8 { 1 } else { 0x3000 },
        base,
        bitmap,
    };
    let leak = |v: Vec<u8>| -> &'static [u8] { Vec::leak(v) };
    let deadbeef: &'static [u8] = Vec::leak(deadbeef.to_vec());
    let ranges = [
        r(1, 0, leak(full.clone())),
        r(2, 0, leak(write0)),
        r(3, 0x4000_0000, leak(full.clone())),
        r(1, 0xc000_0000, leak(read_c)),
        r(2, 0xc000_0000, leak(full.clone())),
        r(3, 0xdead_beef, deadbeef),
    ];
    Filter::from_raw(&RawFilter {
        flags: 1,
        ranges: &ranges,
    })
    .unwrap()
}

#[test]
fn selftest_filters_pack_no_larger_than_the_selftest_made_them() {
    for case in &CASES {
        let policy: Policy<16> = Policy::parse(case.policy).unwrap();
        let packed = policy.pack().unwrap();
        let f = &packed.filter;
        println!(
            "{:<13} selftest: {} ranges, {:>5} bytes   packed: {} ranges, {:>5} bytes{}",
            case.name,
            case.selftest.0,
            case.selftest.1,
            f.range_count(),
            f.bitmap_bytes(),
            if packed.proven_minimal {
                " (proven minimal)"
            } else {
                ""
            }
        );
        assert_eq!(
            (f.range_count(), f.bitmap_bytes()),
            case.packed,
            "{}:\n{f}",
            case.name
        );
        assert!(packed.proven_minimal);
        assert!(case.packed.0 <= case.selftest.0);
    }
}

#[test]
fn packed_filter_deny_decides_as_the_selftest_filter() {
    let policy: Policy<16> = Policy::parse(CASES[3].policy).unwrap();
    let ours = policy.pack().unwrap().filter;
    let theirs = selftest_filter_deny();
    let mut probes = vec![
        0xdead_beef,
        0xdead_beee,
        0xdead_bef0,
        u32::MAX,
        0x1fc,
        0x84,
        0x101,
    ];
    for base in [0u32, 0x4000_0000, 0xc000_0000] {
        for off in (0..0x3010).step_by(7).chain([0x2fff, 0x3000, 0x3001]) {
            probes.push(base + off);
        }
    }
    // The selftest's deny_msr() masks the MSR with 0x5ff, so its bitmaps deny the bit at
    // `msr & 0x5ff` (0x84 and 0x101 of the 0xc0000000 range: the intended SYSCALL_MASK and
    // GS_BASE) and 0x1fc of range 0 (POWER_CTL): our policy says the same.
    for &i in &probes {
        for a in AccessType::ALL {
            assert_eq!(ours.decide(i, a), theirs.decide(i, a), "MSR {i:#x} {a}");
        }
    }
}
