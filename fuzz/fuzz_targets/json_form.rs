//! The JSON form of a raw filter on arbitrary text: never panics; a filter the kernel accepts
//! writes back to JSON that reads to the same filter; no message echoes a control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msr_filter_cli::json::{to_json, RawFilterJson};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match RawFilterJson::parse(text) {
        Ok(raw) => {
            if let Ok(filter) = raw.filter() {
                let again = RawFilterJson::parse(&to_json(&filter).to_string())
                    .expect("written JSON reads back");
                assert_eq!(again.filter().as_ref(), Ok(&filter));
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        }
    }
});
