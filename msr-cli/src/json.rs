//! A raw filter as JSON, both ways: one documented form of `struct kvm_msr_filter` ([`FORM`],
//! which `msrfilter check --help` prints too):
//!
//! ```text
#![doc = include_str!("json_form.txt")]
//! ```
//!
//! Output ([`to_json`]) uses the names (`"allow"`, `["read"]`) and lists slots up to the last
//! non-empty one. Input ([`RawFilterJson::parse`]) gives the raw filter; the kernel's verdict on
//! it is [`RawFilterJson::filter`].

use std::fmt;

use msr_filter_core::{abi, Access, Action, Filter, InvalidFilter, Quoted, RawFilter, RawRange};
use serde_json::{json, Map, Value};

use msr_filter_kvm::convert::bitmap_bytes;

/// The JSON form, as plain text (the module docs and `msrfilter check --help` show it).
pub const FORM: &str = include_str!("json_form.txt");

/// The JSON form of a filter.
pub fn to_json(filter: &Filter) -> Value {
    let last_used = filter.used_ranges().map(|(slot, _)| slot).last();
    let ranges: Vec<Value> = filter.ranges()[..last_used.map_or(0, |s| s + 1)]
        .iter()
        .map(|r| {
            let mut flags = Vec::new();
            if r.flags().contains(Access::READ) {
                flags.push("read");
            }
            if r.flags().contains(Access::WRITE) {
                flags.push("write");
            }
            json!({
                "flags": flags,
                "base": format!("{:#x}", r.base()),
                "nmsrs": r.nmsrs(),
                "bitmap": hex(bitmap_bytes(r)),
            })
        })
        .collect();
    json!({ "default": filter.default_action().as_str(), "ranges": ranges })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One range read from JSON: raw values, as another program might pass them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRangeJson {
    /// Raw range flags.
    pub flags: u32,
    /// First MSR.
    pub base: u32,
    /// MSR count.
    pub nmsrs: u32,
    /// Bitmap bytes.
    pub bitmap: Vec<u8>,
}

/// A filter read from JSON: raw values, not yet judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFilterJson {
    /// Raw filter flags.
    pub flags: u32,
    /// The slots, in order.
    pub ranges: Vec<RawRangeJson>,
}

/// Why JSON does not describe a filter; names the range and the field.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON at all.
    Syntax(String),
    /// The top level is not an object with `default` and `ranges`.
    Shape(&'static str),
    /// More than 16 ranges.
    TooManyRanges {
        /// How many.
        count: usize,
    },
    /// A field of a range (or `default`, with `range` None) has a bad value.
    Field {
        /// The range index, or None for the filter's own fields.
        range: Option<usize>,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(e) => write!(f, "not valid JSON: {e}"),
            JsonError::Shape(what) => write!(f, "not a filter: {what}"),
            JsonError::TooManyRanges { count } => write!(
                f,
                "{count} ranges, but struct kvm_msr_filter has {} slots",
                abi::MAX_RANGES
            ),
            JsonError::Field {
                range: Some(r),
                field,
                problem,
            } => write!(f, "range {r}, field `{field}`: {problem}"),
            JsonError::Field {
                range: None,
                field,
                problem,
            } => write!(f, "field `{field}`: {problem}"),
        }
    }
}

impl std::error::Error for JsonError {}

fn field_err(range: Option<usize>, field: &'static str, problem: impl Into<String>) -> JsonError {
    JsonError::Field {
        range,
        field,
        problem: problem.into(),
    }
}

/// A u32 given as a JSON number or a `"0x..."` (or decimal) string.
fn number(v: &Value, range: Option<usize>, field: &'static str) -> Result<u32, JsonError> {
    let parsed = match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => msr_filter_core::parse_number(s),
        _ => None,
    };
    parsed.ok_or_else(|| {
        field_err(
            range,
            field,
            format!(
                "{} is not a 32-bit number (a JSON number or a \"0x...\" string)",
                Quoted(&v.to_string())
            ),
        )
    })
}

fn get<'a>(
    obj: &'a Map<String, Value>,
    range: Option<usize>,
    field: &'static str,
) -> Result<&'a Value, JsonError> {
    obj.get(field)
        .ok_or_else(|| field_err(range, field, "missing"))
}

impl RawFilterJson {
    /// Reads the JSON form. Refuses more than 16 ranges, a bitmap that is not hex or not
    /// exactly `ceil(nmsrs / 64) * 8` bytes (capped at 0x600), and values of the wrong type,
    /// naming the range and the field; anything else (invalid flags, too many MSRs, DENY without
    /// ranges) is kept for [`filter`](Self::filter) to judge as the kernel would.
    pub fn parse(text: &str) -> Result<RawFilterJson, JsonError> {
        let v = serde_json::from_str::<Unique>(text)
            .map_err(|e| JsonError::Syntax(e.to_string()))?
            .0;
        let obj = v
            .as_object()
            .ok_or(JsonError::Shape("the top level must be an object"))?;
        for key in obj.keys() {
            if key != "default" && key != "ranges" {
                return Err(field_err(
                    None,
                    "(unknown)",
                    format!("unexpected field `{}`", Quoted(key)),
                ));
            }
        }
        let flags = match get(obj, None, "default")? {
            Value::String(s) if s == "allow" => abi::DEFAULT_ALLOW,
            Value::String(s) if s == "deny" => abi::DEFAULT_DENY,
            other @ Value::Number(_) => number(other, None, "default")?,
            other => {
                return Err(field_err(
                    None,
                    "default",
                    format!(
                        "{} is not \"allow\", \"deny\" or an integer",
                        Quoted(&other.to_string())
                    ),
                ))
            }
        };
        let ranges = get(obj, None, "ranges")?
            .as_array()
            .ok_or_else(|| field_err(None, "ranges", "must be a list"))?;
        if ranges.len() > abi::MAX_RANGES {
            return Err(JsonError::TooManyRanges {
                count: ranges.len(),
            });
        }
        let mut out = Vec::with_capacity(ranges.len());
        for (i, r) in ranges.iter().enumerate() {
            let at = Some(i);
            let r = r
                .as_object()
                .ok_or_else(|| field_err(at, "(range)", "must be an object"))?;
            for key in r.keys() {
                if !["flags", "base", "nmsrs", "bitmap"].contains(&key.as_str()) {
                    return Err(field_err(
                        at,
                        "(unknown)",
                        format!("unexpected field `{}`", Quoted(key)),
                    ));
                }
            }
            let flags = match get(r, at, "flags")? {
                Value::Array(list) => {
                    let mut bits = 0;
                    for item in list {
                        bits |= match item.as_str() {
                            Some("read") => abi::RANGE_READ,
                            Some("write") => abi::RANGE_WRITE,
                            _ => {
                                return Err(field_err(
                                    at,
                                    "flags",
                                    format!(
                                        "{} is not \"read\" or \"write\"",
                                        Quoted(&item.to_string())
                                    ),
                                ))
                            }
                        };
                    }
                    bits
                }
                other @ Value::Number(_) => number(other, at, "flags")?,
                other => {
                    return Err(field_err(
                        at,
                        "flags",
                        format!(
                            "{} is not a list of \"read\"/\"write\" or an integer",
                            Quoted(&other.to_string())
                        ),
                    ))
                }
            };
            let base = number(get(r, at, "base")?, at, "base")?;
            let nmsrs = number(get(r, at, "nmsrs")?, at, "nmsrs")?;
            let hex = get(r, at, "bitmap")?
                .as_str()
                .ok_or_else(|| field_err(at, "bitmap", "must be a hex string"))?;
            let bitmap = unhex(hex).map_err(|p| field_err(at, "bitmap", p))?;
            let want = abi::bitmap_bytes(nmsrs);
            // A range the kernel refuses before reading its bitmap (too many MSRs) is left to
            // the kernel's verdict, in the kernel's order.
            if nmsrs > 0 && nmsrs <= abi::MAX_NMSRS && bitmap.len() != want {
                return Err(field_err(
                    at,
                    "bitmap",
                    format!(
                        "{} bytes, but for nmsrs {nmsrs} the kernel reads {want} (ceil(nmsrs / 64) * 8)",
                        bitmap.len()
                    ),
                ));
            }
            out.push(RawRangeJson {
                flags,
                base,
                nmsrs,
                bitmap,
            });
        }
        Ok(RawFilterJson { flags, ranges: out })
    }

    /// The ranges as msr-filter-core's raw type, borrowing the bitmaps (for [`RawFilter`]).
    pub fn raw_ranges(&self) -> Vec<RawRange<'_>> {
        self.ranges
            .iter()
            .map(|r| RawRange {
                flags: r.flags,
                nmsrs: r.nmsrs,
                base: r.base,
                bitmap: &r.bitmap,
            })
            .collect()
    }

    /// The kernel's verdict: the filter it would install, or why it would refuse it.
    pub fn filter(&self) -> Result<Filter, InvalidFilter> {
        Filter::from_raw(&RawFilter {
            flags: self.flags,
            ranges: &self.raw_ranges(),
        })
    }
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    // Hex digits only: `u8::from_str_radix` alone would take "+f".
    if let Some((i, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{}` at offset {i} is not a hex digit (the bitmap is hex digits only, two per byte)",
            Quoted(&c.to_string())
        ));
    }
    if !s.len().is_multiple_of(2) {
        return Err(format!(
            "{} hex digits: not a whole number of bytes",
            s.len()
        ));
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("checked hex digits"))
        .collect())
}

/// A JSON value read with every object's keys checked for duplicates (`serde_json::Value`
/// keeps the last of two equal keys silently).
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
        Ok(Unique(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
        Ok(Unique(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Unique, E> {
        Ok(Unique(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Unique, E> {
        Ok(Unique(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Unique(Value::Array(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{}` appears twice in one object",
                    Quoted(&key)
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Unique(Value::Object(object)))
    }
}

/// The JSON of one decision, for `explain --format json`.
pub fn explanation_json(
    index: u32,
    access: msr_filter_core::AccessType,
    e: &msr_filter_core::Explanation,
) -> Value {
    let (decider, detail) = match e.decider {
        msr_filter_core::Decider::X2apic => ("x2apic", Value::Null),
        msr_filter_core::Decider::Default => ("default", Value::Null),
        msr_filter_core::Decider::NoFilter => ("no-filter", Value::Null),
        msr_filter_core::Decider::Range { slot, bit } => {
            ("range", json!({ "slot": slot, "bit": bit }))
        }
    };
    json!({
        "msr": format!("{index:#x}"),
        "name": msr_filter_core::names::name_of(index),
        "access": access.as_str(),
        "decision": match e.action { Action::Allow => "allow", Action::Deny => "deny" },
        "decided_by": decider,
        "range": detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use msr_filter_core::Policy;
    use proptest::prelude::*;

    #[test]
    fn round_trip_pack_to_json_and_back() {
        let policy: Policy<8> =
            Policy::parse("default deny\nallow rw 0x0+0x100\ndeny w 0x48\nallow r 0xc0000080+5")
                .unwrap();
        let filter = policy.pack().unwrap().filter;
        let text = to_json(&filter).to_string();
        let back = RawFilterJson::parse(&text).unwrap().filter().unwrap();
        assert_eq!(back, filter);
    }

    #[test]
    fn documented_example_parses() {
        let raw = RawFilterJson::parse(
            r#"{"default": "deny", "ranges": [{"flags": ["read", "write"], "base": "0xc0000080", "nmsrs": 5, "bitmap": "1f00000000000000"}]}"#,
        )
        .unwrap();
        let f = raw.filter().unwrap();
        assert_eq!(
            f.decide(0xc000_0084, msr_filter_core::AccessType::Write),
            Action::Allow
        );
        assert_eq!(
            f.decide(0xc000_0085, msr_filter_core::AccessType::Write),
            Action::Deny
        );
    }

    #[test]
    fn strict_hex_duplicate_keys_and_the_kernels_order() {
        let e = RawFilterJson::parse(
            r#"{"default": 0, "ranges": [{"flags": 1, "base": 1, "nmsrs": 1, "bitmap": "+f+f+f+f+f+f+f+f"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("field `bitmap`: `+` at offset 0 is not a hex digit"),
            "{e}"
        );
        let e = RawFilterJson::parse(
            r#"{"default": 0, "ranges": [{"flags": 1, "base": 1, "nmsrs": 1, "nmsrs": 2, "bitmap": "0000000000000000"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the key `nmsrs` appears twice"), "{e}");
        // nmsrs 0x3001 with the 0x608 bytes its formula gives: the kernel refuses the size
        // (EINVAL) before it reads any bitmap, and so does the verdict.
        let text = format!(
            r#"{{"default": 0, "ranges": [{{"flags": 1, "base": 0, "nmsrs": 12289, "bitmap": "{}"}}]}}"#,
            "00".repeat(0x608)
        );
        let raw = RawFilterJson::parse(&text).unwrap();
        assert!(matches!(
            raw.filter(),
            Err(InvalidFilter::RangeTooLarge { .. })
        ));
        // Keys with control characters are shown escaped.
        let e = RawFilterJson::parse("{\"default\": 0, \"ranges\": [], \"x\\u001b[2J\": 1}")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\u{1b}') && e.contains("x\\u{1b}[2J"), "{e:?}");
        // Found by the json_form fuzz target: a value with DEL (0x7f), which JSON does not
        // escape, was echoed raw; every quoted value is escaped and cut now.
        let e = RawFilterJson::parse("{\"default\": \"a|||\u{7f}||llow\", \"ranges\": []}")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\u{7f}') && e.contains("\\u{7f}"), "{e:?}");
        let long = format!(
            "{{\"default\": 0, \"ranges\": [{{\"flags\": \"{}\"}}]}}",
            "f".repeat(5000)
        );
        let e = RawFilterJson::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains('…'), "{e}");
    }

    #[test]
    fn errors_name_range_and_field() {
        let cases = [
            (r#"{"default": "maybe", "ranges": []}"#, "field `default`"),
            (
                r#"{"default": 0, "ranges": [{"flags": 1, "base": 1, "nmsrs": 1, "bitmap": "00"}]}"#,
                "range 0, field `bitmap`: 1 bytes",
            ),
            (
                r#"{"default": 0, "ranges": [{"flags": 1, "base": 1, "nmsrs": 1, "bitmap": "zz00000000000000"}]}"#,
                "range 0, field `bitmap`: `z` at offset 0 is not a hex digit",
            ),
            (
                r#"{"default": 0, "ranges": [{"flags": ["exec"], "base": 1, "nmsrs": 1, "bitmap": ""}]}"#,
                "range 0, field `flags`",
            ),
            (
                r#"{"default": 0, "ranges": [{"flags": 1, "base": "0x1g", "nmsrs": 1, "bitmap": ""}]}"#,
                "range 0, field `base`",
            ),
            (
                r#"{"default": 0, "ranges": [{"flags": 1, "base": 1, "bitmap": ""}]}"#,
                "range 0, field `nmsrs`: missing",
            ),
            (r#"[1]"#, "not a filter"),
            (r#"{"#, "not valid JSON"),
        ];
        for (text, want) in cases {
            let e = RawFilterJson::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let many = format!(
            r#"{{"default": 0, "ranges": [{}]}}"#,
            vec![r#"{"flags": 1, "base": 1, "nmsrs": 0, "bitmap": ""}"#; 17].join(",")
        );
        assert_eq!(
            RawFilterJson::parse(&many),
            Err(JsonError::TooManyRanges { count: 17 })
        );
        // Raw invalid values are kept for the kernel's verdict.
        let raw = RawFilterJson::parse(r#"{"default": 2, "ranges": []}"#).unwrap();
        assert_eq!(raw.filter(), Err(InvalidFilter::FilterFlags { flags: 2 }));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,200}") {
            let _ = RawFilterJson::parse(&text);
        }

        #[test]
        fn parser_never_panics_on_filter_like_json(
            default in prop_oneof![Just("\"allow\"".to_string()), Just("\"deny\"".to_string()), any::<i64>().prop_map(|n| n.to_string())],
            flags in prop_oneof![Just("[\"read\"]".to_string()), any::<i64>().prop_map(|n| n.to_string()), Just("\"x\"".to_string())],
            base in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "\"0x[0-9a-g]{0,10}\""],
            nmsrs in prop_oneof![(0u64..0x4000).prop_map(|n| n.to_string()), any::<i64>().prop_map(|n| n.to_string())],
            bitmap in "[0-9a-fz]{0,40}",
        ) {
            let text = format!(r#"{{"default": {default}, "ranges": [{{"flags": {flags}, "base": {base}, "nmsrs": {nmsrs}, "bitmap": "{bitmap}"}}]}}"#);
            if let Ok(raw) = RawFilterJson::parse(&text) {
                let _ = raw.filter();
            }
        }
    }
}
