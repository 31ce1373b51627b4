//! The policy parser on arbitrary bytes: never panics; every error has a position inside the
//! text; whatever parses prints back to text that parses to the same policy; the statement
//! iterator and `Policy::parse` agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msr_filter_core::{statements, Policy, Statement};

fuzz_target!(|data: &[u8]| {
    match Policy::<64>::parse_bytes(data) {
        Ok(policy) => {
            let text = policy.to_string();
            assert_eq!(Policy::<64>::parse(&text).as_ref(), Ok(&policy), "{text}");
            let source = std::str::from_utf8(data).unwrap();
            let rules: Vec<_> = statements(source)
                .map(|s| s.unwrap())
                .filter_map(|(s, _)| match s {
                    Statement::Rule(r) => Some(r),
                    Statement::Default(_) => None,
                })
                .collect();
            assert_eq!(&rules[..], policy.rules());
        }
        Err(e) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
            assert!(e.line() >= 1 && e.line() <= lines, "{e}");
            assert!(e.column() >= 1, "{e}");
            let shown = e.to_string();
            assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        }
    }
});
