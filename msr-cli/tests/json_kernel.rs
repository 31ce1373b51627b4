//! `check --raw`'s verdict on random raw filters in the JSON form (valid and invalid) agrees
//! with `KVM_X86_SET_MSR_FILTER` on the running kernel.

use msr_filter_cli::json::RawFilterJson;
use msr_filter_core::{abi, RawFilter};
use msr_filter_kvm::convert::kernel_verdict;
use msr_filter_kvm::guest::{kvm_available, GuestVm};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;

/// One raw range as JSON, with a bitmap of the length the JSON form requires.
fn range() -> impl Strategy<Value = serde_json::Value> {
    (
        prop_oneof![6 => 1u32..=3, 1 => Just(0u32), 1 => 4u32..=8],
        prop_oneof![
            2 => Just(0u32),
            8 => 1u32..=0x200,
            1 => 0x2ff0u32..=0x3010,
            1 => Just(0x3001u32),
        ],
        prop_oneof![any::<u32>(), 0u32..0x1000, 0xffff_ff00u32..=u32::MAX],
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(flags, nmsrs, base, fill, named)| {
            let len = abi::bitmap_bytes(nmsrs).min(abi::MAX_BITMAP_BYTES);
            let bitmap: String = (0..len)
                .map(|i| format!("{:02x}", fill.wrapping_add(i as u8)))
                .collect();
            let flags = if named && (1..=3).contains(&flags) {
                let mut list = Vec::new();
                if flags & 1 != 0 {
                    list.push("read");
                }
                if flags & 2 != 0 {
                    list.push("write");
                }
                json!(list)
            } else {
                json!(flags)
            };
            json!({"flags": flags, "base": format!("{base:#x}"), "nmsrs": nmsrs, "bitmap": bitmap})
        })
}

fn filter_json() -> impl Strategy<Value = String> {
    (
        prop_oneof![4 => Just(json!("allow")), 4 => Just(json!("deny")), 1 => (0u32..4).prop_map(|n| json!(n))],
        proptest::collection::vec(range(), 0..=16),
    )
        .prop_map(|(default, ranges)| json!({"default": default, "ranges": ranges}).to_string())
}

#[test]
fn raw_json_verdict_matches_the_ioctl() {
    if !kvm_available() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let g = GuestVm::new().expect("GuestVm::new");
    // A fixed seed: the same 300 filters every run, so the balance check below cannot flake.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 300,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&filter_json(), |text| {
            let raw = RawFilterJson::parse(&text).expect("generated JSON is well-formed");
            let verdict = raw.filter();
            let ranges = raw.raw_ranges();
            let kernel = kernel_verdict(
                g.vm(),
                &RawFilter {
                    flags: raw.flags,
                    ranges: &ranges,
                },
            );
            match (&verdict, kernel) {
                (Ok(_), Ok(())) => accepted.set(accepted.get() + 1),
                (Err(e), Err(errno)) => {
                    prop_assert_eq!(e.errno(), Some(errno), "{}: {}", text, e);
                    refused.set(refused.get() + 1);
                }
                (v, k) => prop_assert!(
                    false,
                    "model {:?} but kernel {:?} for {}",
                    v.as_ref().err(),
                    k,
                    text
                ),
            }
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.get(), refused.get());
    println!("raw JSON verdicts: {accepted} accepted, {refused} refused, all as the kernel");
    assert!(
        accepted > 20 && refused > 20,
        "{accepted} accepted, {refused} refused: too one-sided to mean much"
    );
}
