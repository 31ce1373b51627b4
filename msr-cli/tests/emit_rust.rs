//! `--emit rust`: the generated constants compile (they are included below), load without
//! parsing, decide as the policy, and stay in sync with the generator.
//! Regenerate with `MSR_BLESS=1 cargo test -p msr-filter-kvm --test emit_rust`.

use msr_filter_cli::emit::rust_consts;
use msr_filter_core::{AccessType, Filter, Policy};

/// The policy the checked-in file was generated from.
const POLICY: &str = "default deny
allow rw 0x0+0x2000
deny  w  0x1fc
allow rw 0xc0000080-0xc0000103
deny  r  SYSCALL_MASK
allow rw 0x4b564d00+9
";

mod generated {
    include!("generated/selftest_like_filter.rs");
}

const GENERATED_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/generated/selftest_like_filter.rs"
);

#[test]
fn generated_rust_is_in_sync_with_the_generator() {
    let policy: Policy<16> = Policy::parse(POLICY).unwrap();
    let filter = policy.pack().unwrap().filter;
    let fresh = rust_consts(&filter, "selftest_like", POLICY);
    if std::env::var_os("MSR_BLESS").is_some() {
        std::fs::write(GENERATED_PATH, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(GENERATED_PATH).unwrap();
    assert_eq!(
        checked_in, fresh,
        "tests/generated/selftest_like_filter.rs is stale: rerun with MSR_BLESS=1"
    );
}

#[test]
fn generated_constants_load_and_decide_as_the_policy() {
    let policy: Policy<16> = Policy::parse(POLICY).unwrap();
    let filter = Filter::from_raw(&generated::SELFTEST_LIKE_FILTER).unwrap();
    assert_eq!(filter, policy.pack().unwrap().filter);
    for i in (0..0x2100)
        .chain(0xc000_0070..0xc000_0110)
        .chain(0x4b56_4cf0..0x4b56_4d10)
    {
        for a in AccessType::ALL {
            assert_eq!(filter.decide(i, a), policy.decide(i, a), "MSR {i:#x} {a}");
        }
    }
}
