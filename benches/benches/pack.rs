//! `pack`: how long does packing take? `msr_filter_core::pack_rules` (with a scratch allocated once,
//! outside the timed loop) on policies of 100, 1,000 and 10,000 random short rules in four
//! clusters, each spanning less than one range, under default allow (the minimum, 8 ranges,
//! is known by construction; `msr-core/tests/pack_scale.rs` checks it).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use msr_benches::XorShift;
use msr_filter_core::{pack_rules, scratch_len, Access, Action, Rule};

/// Cluster bases, far apart.
const BASES: [u32; 4] = [0x0010_0000, 0x4000_0000, 0x8000_0000, 0xc000_0000];

/// `count` rules of 1 to 8 MSRs, any access, 7 in 8 denies, spread over four clusters of
/// 0x2f00 MSRs.
fn clustered(count: usize) -> Vec<Rule> {
    let mut rng = XorShift::new(0x9ac4_0000 + count as u64);
    (0..count)
        .map(|i| {
            let first = BASES[i % 4] + rng.below(0x2f00 - 16) as u32;
            let last = first + rng.below(8) as u32;
            let access = Access::from_bits_truncate(1 + rng.below(3) as u32);
            let action = if rng.below(8) == 0 {
                Action::Allow
            } else {
                Action::Deny
            };
            Rule::new(first, last, access, action)
        })
        .collect()
}

fn pack(c: &mut Criterion) {
    let mut group = c.benchmark_group("pack");
    for n in [100, 1000, 10_000] {
        let rules = clustered(n);
        let mut scratch = vec![0u32; scratch_len(n)];
        let packed = pack_rules(Action::Allow, &rules, &mut scratch).expect("packs");
        assert!(packed.proven_minimal);
        assert_eq!(packed.filter.range_count(), 8);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("pack_rules", n), &rules, |b, rules| {
            b.iter(|| {
                let packed = pack_rules(Action::Allow, black_box(rules), &mut scratch);
                black_box(packed.map(|p| p.filter.range_count()))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = pack
}
criterion_main!(benches);
