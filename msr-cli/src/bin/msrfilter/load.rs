//! Loading what commands work on: policy text (with where each rule came from) and input files.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use msr_filter_core::{
    policy_text, statements, Action, PackError, Packed, PolicyView, Rule, Statement,
};

use crate::Failure;

/// A policy read from a file, with where each rule came from. The rules live in a `Vec`: any
/// number of them.
pub(crate) struct Loaded {
    /// The file name as given, `<stdin>` for `-`.
    pub(crate) name: String,
    /// The default action.
    pub(crate) default: Action,
    /// The rules, in order; the demo appends its handlers' rules.
    pub(crate) rules: Vec<Rule>,
    /// For each rule read from the file, in order: its line and its text (without the comment).
    sources: Vec<Source>,
    /// The `default` line.
    default_source: Option<Source>,
    /// The policy text.
    pub(crate) text: String,
    /// Descriptions of rules appended after the file's (by the demo's handlers).
    pub(crate) extra_rules: Vec<String>,
}

/// Where a rule came from.
pub(crate) struct Source {
    /// 1-based line number.
    pub(crate) line: usize,
    /// The statement as written, blanks collapsed.
    pub(crate) text: String,
}

impl Loaded {
    /// Reads and parses `path` (`-`: standard input).
    pub(crate) fn read(path: &str) -> Result<Loaded, Failure> {
        let (name, bytes) = read_input(path)?;
        Loaded::from_bytes(name, &bytes)
    }

    /// Parses policy text read from `name` with the core's parser, keeping each statement's
    /// line and text.
    pub(crate) fn from_bytes(name: String, bytes: &[u8]) -> Result<Loaded, Failure> {
        let located = |e: msr_filter_core::ParseError| {
            Failure::located(format!(
                "{name}:{}:{}: {}",
                e.line(),
                e.column(),
                e.message()
            ))
        };
        let text = policy_text(bytes).map_err(located)?;
        let mut loaded = Loaded {
            name: name.clone(),
            default: Action::Allow,
            rules: Vec::new(),
            sources: Vec::new(),
            default_source: None,
            text: text.to_string(),
            extra_rules: Vec::new(),
        };
        for item in statements(text) {
            let (statement, span) = item.map_err(located)?;
            let source = Source {
                line: span.line as usize,
                text: span.text.split_whitespace().collect::<Vec<_>>().join(" "),
            };
            match statement {
                Statement::Default(action) => {
                    loaded.default = action;
                    loaded.default_source = Some(source);
                }
                Statement::Rule(rule) => {
                    loaded.rules.push(rule);
                    loaded.sources.push(source);
                }
            }
        }
        Ok(loaded)
    }

    /// The policy, borrowed.
    pub(crate) fn view(&self) -> PolicyView<'_> {
        // Every rule came from the parser, which checks each one.
        PolicyView::new(self.default, &self.rules).expect("parsed rules are well formed")
    }

    /// `rule N: TEXT (line L)`, as the user wrote it.
    pub(crate) fn describe_rule(&self, rule: usize) -> String {
        match self.sources.get(rule) {
            Some(s) => format!("rule {rule}: {} (line {})", s.text, s.line),
            None => match self.extra_rules.get(rule - self.sources.len()) {
                Some(extra) => format!("rule {rule}: {extra}"),
                None => format!("rule {rule}"),
            },
        }
    }

    /// Where rule `rule` came from, when it came from the file.
    pub(crate) fn source(&self, rule: usize) -> Option<&Source> {
        self.sources.get(rule)
    }

    /// The `default` line as written and its number (none when the file had no such line).
    pub(crate) fn default_text_and_line(&self) -> (String, Option<usize>) {
        match &self.default_source {
            None => (format!("default {}", self.default), None),
            Some(source) => (source.text.clone(), Some(source.line)),
        }
    }

    /// `the default action: default allow (line L)`.
    pub(crate) fn describe_default(&self) -> String {
        match &self.default_source {
            None => format!("the default action: default {}", self.default),
            Some(source) => format!("the default action: {} (line {})", source.text, source.line),
        }
    }

    /// Packs the policy; a failure names the file and the rules concerned with their lines.
    pub(crate) fn pack(&self) -> Result<Packed, Failure> {
        msr_filter_kvm::pack(self.view()).map_err(|e| self.pack_failure(&e))
    }

    /// `FILE: MESSAGE`, then a note per rule the error names.
    pub(crate) fn pack_failure(&self, e: &PackError) -> Failure {
        let mut message = format!("{}: {e}", self.name);
        let rules: Vec<usize> = match e {
            PackError::DeniesX2apic { rule, .. } => vec![*rule],
            PackError::LastMsrSplit {
                read_rule,
                write_rule,
            } => read_rule.iter().chain(write_rule.iter()).copied().collect(),
            PackError::TooManyRanges {
                rules,
                default_forced_by,
                ..
            } => rules
                .iter()
                .map(|&r| usize::from(r))
                .chain(*default_forced_by)
                .collect(),
            _ => Vec::new(),
        };
        for rule in rules {
            message.push_str(&format!(
                "\n{}: note: {}",
                self.name,
                self.describe_rule(rule)
            ));
        }
        Failure::located(message)
    }
}

/// Reads `path` (`-`: standard input): the name to report it by (`<stdin>` for `-`) and its
/// bytes.
/// The default input limit: 4 MiB (a policy of about 100,000 rules).
pub(crate) const DEFAULT_MAX_INPUT: u64 = 4 << 20;

/// The input limit in force (`--max-input-bytes`).
static MAX_INPUT: AtomicU64 = AtomicU64::new(DEFAULT_MAX_INPUT);

/// Sets the input limit for every later [`read_input`].
pub(crate) fn set_max_input(bytes: u64) {
    MAX_INPUT.store(bytes, Relaxed);
}

/// Reads `path` (`-`: standard input): the name to report it by (`<stdin>` for `-`) and its
/// bytes. Reads at most the input limit plus one byte (so `/dev/zero` or an endless pipe ends
/// with an error, not with the host's memory), and refuses input past the limit.
pub(crate) fn read_input(path: &str) -> Result<(String, Vec<u8>), Failure> {
    let limit = MAX_INPUT.load(Relaxed);
    let (name, reader): (String, Box<dyn Read>) = if path == "-" {
        ("<stdin>".to_string(), Box::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| Failure::new(format!("cannot read {path}: {e}")))?;
        (path.to_string(), Box::new(file))
    };
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(format!("cannot read {name}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new(format!(
            "{name} is larger than the input limit of {limit} bytes; raise it with --max-input-bytes"
        )));
    }
    Ok((name, bytes))
}
