//! `msrfilter pack`: a policy packed and printed as JSON, a C header or Rust consts.

use std::path::Path;

use msr_filter_cli::emit;
use msr_filter_cli::json::to_json;

use crate::report::out;
use crate::{print_json, Emit, Failure, Loaded};

/// `msrfilter pack POLICY --emit json|c|rust [--name NAME]`.
pub fn pack(path: &str, what: Emit, name: Option<&str>) -> Result<(), Failure> {
    let loaded = Loaded::read(path)?;
    let filter = loaded.pack()?.filter;
    let name = name.map_or_else(|| default_name(path), str::to_string);
    match what {
        Emit::Json => print_json(&to_json(&filter)),
        Emit::C => out!("{}", emit::c_header(&filter, &name, &loaded.text)),
        Emit::Rust => out!("{}", emit::rust_consts(&filter, &name, &loaded.text)),
    }
    Ok(())
}

/// The file's stem (`examples/demo.policy`: `demo`), `policy` for standard input; the emitters
/// make it an identifier.
fn default_name(path: &str) -> String {
    if path == "-" {
        return "policy".to_string();
    }
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "policy".to_string())
}
