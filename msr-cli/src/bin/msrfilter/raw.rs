//! Raw filters in JSON (`--raw`): a `struct kvm_msr_filter` as another VMM would pass it, judged
//! as the kernel would judge it.

use msr_filter_cli::json::RawFilterJson;
use msr_filter_core::{abi, Filter, InvalidFilter};
use serde_json::{json, Value};

use crate::{read_input, Failure};

/// A raw filter read from a file.
pub struct RawLoaded {
    /// The file name as given, `<stdin>` for `-`.
    pub name: String,
    /// The filter as given, not yet judged.
    pub raw: RawFilterJson,
}

impl RawLoaded {
    /// Reads `path` (`-`: standard input); an error names the file, and the range and field
    /// where the JSON does not describe a filter.
    pub fn read(path: &str) -> Result<RawLoaded, Failure> {
        let (name, bytes) = read_input(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Failure::located(format!("{name}: not valid JSON: not UTF-8 text ({e})"))
        })?;
        let raw =
            RawFilterJson::parse(text).map_err(|e| Failure::located(format!("{name}: {e}")))?;
        Ok(RawLoaded { name, raw })
    }

    /// The kernel's verdict: the filter it would install, or a failure naming the rule it breaks.
    pub fn filter(&self) -> Result<Filter, Failure> {
        self.raw.filter().map_err(|e| self.refusal(&e))
    }

    /// `FILE: the kernel would refuse this filter (EINVAL): REASON`.
    pub fn refusal(&self, e: &InvalidFilter) -> Failure {
        Failure::located(match errno_name(e) {
            Some(errno) => format!(
                "{}: the kernel would refuse this filter: KVM_X86_SET_MSR_FILTER fails with {errno}: {e}",
                self.name
            ),
            None => format!("{}: the kernel would refuse this filter: {e}", self.name),
        })
    }

    /// The non-empty slots (`nmsrs` > 0) as given.
    pub fn ranges_given(&self) -> usize {
        self.raw.ranges.iter().filter(|r| r.nmsrs > 0).count()
    }

    /// The bitmap bytes as given.
    pub fn bitmap_bytes_given(&self) -> usize {
        self.raw.ranges.iter().map(|r| r.bitmap.len()).sum()
    }
}

/// `EINVAL` or `EFAULT`: the errno the ioctl fails with; `None` for a filter that cannot even
/// be expressed as `struct kvm_msr_filter`.
pub fn errno_name(e: &InvalidFilter) -> Option<String> {
    e.errno().map(|n| match n {
        abi::EINVAL => "EINVAL".to_string(),
        abi::EFAULT => "EFAULT".to_string(),
        n => format!("errno {n}"),
    })
}

/// `{"errno": "EINVAL", "message": ...}`.
pub fn error_json(e: &InvalidFilter) -> Value {
    json!({ "errno": errno_name(e), "message": e.to_string() })
}
