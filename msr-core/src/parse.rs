//! The policy text format, parsed without allocating.
//!
//! ```text
//! default allow                    # exactly one default line: allow or deny
//! deny  rw 0x474f4f00              # one MSR, by number (0x hex or decimal)
//! deny  w  IA32_SPEC_CTRL          # or by name (see msr_filter_core::names), any case
//! allow r  0xc0000080-0xc0000084   # an inclusive range
//! deny  rw 0x40000000+0x100        # base+count
//! deny  rw HYPERV                  # a named group of MSRs
//! ```
//! Later rules override earlier ones. Names may also be used as range ends
//! (`IA32_SYSENTER_CS-IA32_SYSENTER_EIP`).

use core::fmt;

use crate::policy::{Policy, Rule};
use crate::{names, Access, Action};

/// Longest prefix of an offending token an error keeps.
const TOKEN_CAPACITY: usize = 40;

/// What is wrong at a place in policy text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The input is not UTF-8.
    NotUtf8,
    /// A line starts with something other than `default`, `allow` or `deny`.
    ExpectedAction,
    /// `default` is not followed by `allow` or `deny`.
    ExpectedDefaultAction,
    /// A second `default` line.
    DuplicateDefault {
        /// The line of the first one.
        first_line: u32,
    },
    /// The policy has no `default` line.
    MissingDefault,
    /// The access is missing or not one of `r`, `w`, `rw`.
    ExpectedAccess,
    /// The MSR or range is missing.
    ExpectedTarget,
    /// A number that does not parse or does not fit in 32 bits.
    BadNumber,
    /// A name that is neither a known MSR nor a known group.
    UnknownName,
    /// A range whose first MSR is after its last.
    Reversed {
        /// The first MSR.
        first: u32,
        /// The last MSR.
        last: u32,
    },
    /// `base+0`.
    ZeroCount,
    /// `base+count` runs past MSR 0xffffffff.
    PastEnd {
        /// The base.
        base: u32,
        /// The count.
        count: u32,
    },
    /// Something follows a complete line.
    Trailing,
    /// More rules than the policy holds.
    TooManyRules {
        /// The policy's capacity.
        capacity: usize,
    },
}

/// A policy text error: where, what, and the offending token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    line: u32,
    column: u32,
    kind: ParseErrorKind,
    token: heapless::String<TOKEN_CAPACITY>,
}

impl ParseError {
    fn new(line: u32, column: u32, kind: ParseErrorKind, token: &str) -> Self {
        let mut kept = heapless::String::new();
        for c in token.chars() {
            if kept.push(c).is_err() {
                break;
            }
        }
        ParseError {
            line,
            column,
            kind,
            token: kept,
        }
    }

    /// 1-based line number.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// 1-based column (in characters) where the offending token starts.
    pub fn column(&self) -> u32 {
        self.column
    }

    /// What is wrong.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// The offending token (its first 40 characters), empty where there is none.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The message without the position, for `file:line:col: message` output.
    pub fn message(&self) -> impl fmt::Display + '_ {
        Message(self)
    }
}

struct Message<'a>(&'a ParseError);

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0.token();
        match self.0.kind {
            ParseErrorKind::NotUtf8 => write!(f, "the policy is not valid UTF-8"),
            ParseErrorKind::ExpectedAction => {
                write!(f, "expected `default`, `allow` or `deny`, found `{t}`")
            }
            ParseErrorKind::ExpectedDefaultAction => {
                write!(f, "expected `allow` or `deny` after `default`, found `{t}`")
            }
            ParseErrorKind::DuplicateDefault { first_line } => write!(
                f,
                "a second default action `{t}`; line {first_line} already set one"
            ),
            ParseErrorKind::MissingDefault => write!(
                f,
                "the policy has no `default allow` or `default deny` line"
            ),
            ParseErrorKind::ExpectedAccess => {
                write!(f, "expected the access `r`, `w` or `rw`, found `{t}`")
            }
            ParseErrorKind::ExpectedTarget => write!(
                f,
                "expected an MSR, a range `first-last` or `base+count`, or a name; found nothing"
            ),
            ParseErrorKind::BadNumber => write!(
                f,
                "`{t}` is not a 32-bit number (write 0x-prefixed hex or decimal)"
            ),
            ParseErrorKind::UnknownName => write!(f, "`{t}` is not a known MSR or group name"),
            ParseErrorKind::Reversed { first, last } => write!(
                f,
                "the range `{t}` starts at {first:#x}, after its last MSR {last:#x}"
            ),
            ParseErrorKind::ZeroCount => write!(f, "the range `{t}` covers no MSR (count 0)"),
            ParseErrorKind::PastEnd { base, count } => write!(
                f,
                "the range `{t}` ({base:#x} plus {count:#x} MSRs) runs past MSR 0xffffffff"
            ),
            ParseErrorKind::Trailing => write!(f, "unexpected `{t}` after a complete rule"),
            ParseErrorKind::TooManyRules { capacity } => write!(
                f,
                "the rule `{t}` is one too many: the policy holds at most {capacity} rules"
            ),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line,
            self.column,
            self.message()
        )
    }
}

impl core::error::Error for ParseError {}

/// Whitespace-separated tokens of one line, with their 1-based character columns.
struct Tokens<'a> {
    rest: &'a str,
    column: u32,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Option<(&'a str, u32)> {
        let trimmed = self.rest.trim_start();
        self.column = self
            .column
            .saturating_add(count_chars(&self.rest[..self.rest.len() - trimmed.len()]));
        if trimmed.is_empty() {
            self.rest = trimmed;
            return None;
        }
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (token, rest) = trimmed.split_at(end);
        let column = self.column;
        self.column = self.column.saturating_add(count_chars(token));
        self.rest = rest;
        Some((token, column))
    }
}

fn count_chars(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX)
}

/// A 32-bit number as policy text writes it: `0x`-prefixed hex or decimal, digits only.
///
/// ```
/// assert_eq!(msr_filter_core::parse_number("0xc0000080"), Some(0xc000_0080));
/// assert_eq!(msr_filter_core::parse_number("16"), Some(16));
/// assert_eq!(msr_filter_core::parse_number("+16"), None);
/// ```
pub fn parse_number(s: &str) -> Option<u32> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// How policy text names one MSR: a number when it starts with a digit, else a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrText {
    /// The MSR.
    Index(u32),
    /// It starts with a digit but is not a 32-bit number.
    BadNumber,
    /// It is neither a number nor a known name.
    UnknownName,
}

/// Reads one MSR as policy text writes it: a number (`0x` hex or decimal) or a name from
/// [`names`](crate::names). For command lines and other hosts that take MSRs as text.
///
/// ```
/// use msr_filter_core::{parse_msr, MsrText};
/// assert_eq!(parse_msr("spec_ctrl"), MsrText::Index(0x48));
/// assert_eq!(parse_msr("0x48"), MsrText::Index(0x48));
/// assert_eq!(parse_msr("0x4g"), MsrText::BadNumber);
/// ```
pub fn parse_msr(s: &str) -> MsrText {
    let starts_with_digit = s.as_bytes().first().is_some_and(u8::is_ascii_digit);
    let index = if starts_with_digit {
        parse_number(s)
    } else {
        names::index_of(s)
    };
    match (index, starts_with_digit) {
        (Some(index), _) => MsrText::Index(index),
        (None, true) => MsrText::BadNumber,
        (None, false) => MsrText::UnknownName,
    }
}

/// One end of a range: a number or an MSR name.
fn parse_item(s: &str, line: u32, column: u32) -> Result<u32, ParseError> {
    let kind = match parse_msr(s) {
        MsrText::Index(index) => return Ok(index),
        MsrText::BadNumber => ParseErrorKind::BadNumber,
        MsrText::UnknownName => ParseErrorKind::UnknownName,
    };
    Err(ParseError::new(line, column, kind, s))
}

/// A rule's target: `ITEM`, `ITEM-ITEM`, `ITEM+COUNT` or a group name, as an inclusive range.
fn parse_target(s: &str, line: u32, column: u32) -> Result<(u32, u32), ParseError> {
    let sub_column = |prefix: &str| column.saturating_add(count_chars(prefix));
    if let Some((a, b)) = s.split_once('-') {
        let first = parse_item(a, line, column)?;
        let last = parse_item(b, line, sub_column(&s[..=a.len()]))?;
        if first > last {
            return Err(ParseError::new(
                line,
                column,
                ParseErrorKind::Reversed { first, last },
                s,
            ));
        }
        return Ok((first, last));
    }
    if let Some((a, b)) = s.split_once('+') {
        let base = parse_item(a, line, column)?;
        let count_column = sub_column(&s[..=a.len()]);
        let count = parse_number(b)
            .ok_or_else(|| ParseError::new(line, count_column, ParseErrorKind::BadNumber, b))?;
        if count == 0 {
            return Err(ParseError::new(line, column, ParseErrorKind::ZeroCount, s));
        }
        let last = base.checked_add(count - 1).ok_or_else(|| {
            ParseError::new(line, column, ParseErrorKind::PastEnd { base, count }, s)
        })?;
        return Ok((base, last));
    }
    if let Some(group) = names::group_of(s) {
        return Ok(group);
    }
    let index = parse_item(s, line, column)?;
    Ok((index, index))
}

fn parse_action(s: &str) -> Option<Action> {
    match s {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        _ => None,
    }
}

fn parse_access(s: &str) -> Option<Access> {
    match s {
        "r" => Some(Access::READ),
        "w" => Some(Access::WRITE),
        "rw" | "wr" => Some(Access::READ_WRITE),
        _ => None,
    }
}

/// One statement of policy text: the `default` line or a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statement {
    /// `default allow` or `default deny`.
    Default(Action),
    /// `allow|deny r|w|rw TARGET`.
    Rule(Rule),
}

/// Where a statement stands in the text, for messages that point back at what the user wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<'a> {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column (in characters) of the statement's first word.
    pub column: u32,
    /// The statement as written: the line without its comment and outer blanks.
    pub text: &'a str,
}

/// The statements of policy text in order, each with its [`Span`]; the one parser behind
/// [`Policy::parse`], for hosts that keep rules elsewhere (a `Vec`, a C array) or want to know
/// where each rule came from. Allocation-free.
///
/// The iterator checks everything but capacity: it yields `Err` at the first error (and then
/// ends), and `Err` with [`ParseErrorKind::MissingDefault`] at the end of text that had no
/// `default` line.
///
/// ```
/// use msr_filter_core::{statements, Access, Action, Rule, Statement};
///
/// let text = "default deny\n\nallow rw 0x10-0x1f   # TSC and friends\n";
/// let parsed: Vec<_> = statements(text).collect::<Result<_, _>>().unwrap();
/// assert_eq!(parsed[0].0, Statement::Default(Action::Deny));
/// let (rule, span) = parsed[1];
/// assert_eq!(rule, Statement::Rule(Rule::new(0x10, 0x1f, Access::READ_WRITE, Action::Allow)));
/// assert_eq!((span.line, span.column, span.text), (3, 1, "allow rw 0x10-0x1f"));
/// ```
pub fn statements(text: &str) -> Statements<'_> {
    Statements {
        lines: text.split('\n'),
        line_no: 0,
        default_line: None,
        done: false,
    }
}

/// Validates that policy bytes are UTF-8, naming the line and column of the first bad byte.
pub fn policy_text(bytes: &[u8]) -> Result<&str, ParseError> {
    core::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        // `good` is valid UTF-8, so this cannot fail.
        let column = core::str::from_utf8(&good[line_start..]).map_or(0, count_chars) + 1;
        ParseError::new(
            u32::try_from(line).unwrap_or(u32::MAX),
            column,
            ParseErrorKind::NotUtf8,
            "",
        )
    })
}

/// The iterator [`statements`] returns.
#[derive(Clone, Debug)]
pub struct Statements<'a> {
    lines: core::str::Split<'a, char>,
    line_no: u32,
    default_line: Option<u32>,
    done: bool,
}

impl<'a> Statements<'a> {
    /// Parses one line: `None` for a blank or comment-only line.
    fn line(&mut self, raw_line: &'a str) -> Result<Option<(Statement, Span<'a>)>, ParseError> {
        let line_no = self.line_no;
        let content = raw_line.split('#').next().unwrap_or("");
        let mut tokens = Tokens {
            rest: content,
            column: 1,
        };
        let Some((word, word_col)) = tokens.next() else {
            return Ok(None);
        };
        let statement = if word == "default" {
            let (value, col) = tokens.next().unwrap_or(("", tokens.column));
            let action = parse_action(value).ok_or_else(|| {
                ParseError::new(line_no, col, ParseErrorKind::ExpectedDefaultAction, value)
            })?;
            if let Some(first_line) = self.default_line {
                return Err(ParseError::new(
                    line_no,
                    word_col,
                    ParseErrorKind::DuplicateDefault { first_line },
                    value,
                ));
            }
            self.default_line = Some(line_no);
            Statement::Default(action)
        } else {
            let action = parse_action(word).ok_or_else(|| {
                ParseError::new(line_no, word_col, ParseErrorKind::ExpectedAction, word)
            })?;
            let (access_word, access_col) = tokens.next().unwrap_or(("", tokens.column));
            let access = parse_access(access_word).ok_or_else(|| {
                ParseError::new(
                    line_no,
                    access_col,
                    ParseErrorKind::ExpectedAccess,
                    access_word,
                )
            })?;
            let Some((target, target_col)) = tokens.next() else {
                return Err(ParseError::new(
                    line_no,
                    tokens.column,
                    ParseErrorKind::ExpectedTarget,
                    "",
                ));
            };
            let (first, last) = parse_target(target, line_no, target_col)?;
            Statement::Rule(Rule::new(first, last, access, action))
        };
        if let Some((extra, col)) = tokens.next() {
            return Err(ParseError::new(
                line_no,
                col,
                ParseErrorKind::Trailing,
                extra,
            ));
        }
        let span = Span {
            line: line_no,
            column: word_col,
            text: content.trim(),
        };
        Ok(Some((statement, span)))
    }
}

impl<'a> Iterator for Statements<'a> {
    type Item = Result<(Statement, Span<'a>), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while let Some(raw_line) = self.lines.next() {
            self.line_no = self.line_no.saturating_add(1);
            match self.line(raw_line) {
                Ok(None) => continue,
                Ok(Some(statement)) => return Some(Ok(statement)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.done = true;
        if self.default_line.is_none() {
            return Some(Err(ParseError::new(
                1,
                1,
                ParseErrorKind::MissingDefault,
                "",
            )));
        }
        None
    }
}

impl core::iter::FusedIterator for Statements<'_> {}

impl<const N: usize> Policy<N> {
    /// Parses policy text (the format: `default allow|deny` once, then `allow|deny r|w|rw TARGET`
    /// lines where TARGET is an MSR number or name, `first-last`, `base+count` or a group name;
    /// `#` starts a comment). Allocation-free; every error names the line, the column and the
    /// offending token. For more rules than a fixed capacity, iterate [`statements`] into storage
    /// of your own and borrow it as a [`PolicyView`](crate::PolicyView).
    ///
    /// ```
    /// use msr_filter_core::{ParseErrorKind, Policy};
    ///
    /// let err = Policy::<4>::parse("default deny\nallow x 0x10\n").unwrap_err();
    /// assert_eq!((err.line(), err.column(), err.token()), (2, 7, "x"));
    /// assert_eq!(err.kind(), ParseErrorKind::ExpectedAccess);
    /// ```
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut policy = Policy::new(Action::Allow);
        for item in statements(text) {
            match item? {
                (Statement::Default(action), _) => policy.set_default_action(action),
                (Statement::Rule(rule), span) => {
                    if policy.push(rule).is_err() {
                        return Err(ParseError::new(
                            span.line,
                            span.column,
                            ParseErrorKind::TooManyRules { capacity: N },
                            span.text,
                        ));
                    }
                }
            }
        }
        Ok(policy)
    }

    /// Parses policy text from bytes, refusing input that is not UTF-8 with the position of the
    /// first bad byte.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::parse(policy_text(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rule;
    use proptest::prelude::*;
    use std::vec;

    fn err(text: &str) -> ParseError {
        Policy::<4>::parse(text).unwrap_err()
    }

    #[test]
    fn parses_the_documented_example() {
        let policy: Policy<8> = Policy::parse(
            "default allow\n\
             deny  rw 0x474f4f00            # comments\n\
             deny  w  IA32_SPEC_CTRL\n\
             allow r  0xc0000080-0xc0000084\n\
             deny  rw 0x40000000+0x100      # base+count\n",
        )
        .unwrap();
        assert_eq!(policy.default_action(), Action::Allow);
        assert_eq!(
            policy.rules(),
            &[
                Rule::single(0x474f_4f00, Access::READ_WRITE, Action::Deny),
                Rule::single(0x48, Access::WRITE, Action::Deny),
                Rule::new(0xc000_0080, 0xc000_0084, Access::READ, Action::Allow),
                Rule::new(0x4000_0000, 0x4000_00ff, Access::READ_WRITE, Action::Deny),
            ]
        );
    }

    #[test]
    fn names_groups_and_name_ranges() {
        let policy: Policy<4> = Policy::parse(
            "default deny\nallow rw ia32_sysenter_cs-IA32_SYSENTER_EIP\nallow r X2APIC\nallow w 16",
        )
        .unwrap();
        assert_eq!(
            policy.rules()[0],
            Rule::new(0x174, 0x176, Access::READ_WRITE, Action::Allow)
        );
        assert_eq!(
            policy.rules()[1],
            Rule::new(0x800, 0x8ff, Access::READ, Action::Allow)
        );
        assert_eq!(
            policy.rules()[2],
            Rule::single(16, Access::WRITE, Action::Allow)
        );
    }

    #[test]
    fn errors_name_line_column_and_token() {
        let cases: [(&str, u32, u32, &str, ParseErrorKind); 14] = [
            (
                "default maybe",
                1,
                9,
                "maybe",
                ParseErrorKind::ExpectedDefaultAction,
            ),
            (
                "default deny\npermit r 1",
                2,
                1,
                "permit",
                ParseErrorKind::ExpectedAction,
            ),
            (
                "default deny\ndefault allow",
                2,
                1,
                "allow",
                ParseErrorKind::DuplicateDefault { first_line: 1 },
            ),
            ("deny r 1", 1, 1, "", ParseErrorKind::MissingDefault),
            (
                "default deny\n  deny rx 1",
                2,
                8,
                "rx",
                ParseErrorKind::ExpectedAccess,
            ),
            (
                "default deny\ndeny r",
                2,
                7,
                "",
                ParseErrorKind::ExpectedTarget,
            ),
            (
                "default deny\ndeny r 0x1g",
                2,
                8,
                "0x1g",
                ParseErrorKind::BadNumber,
            ),
            (
                "default deny\ndeny r 0x100000000",
                2,
                8,
                "0x100000000",
                ParseErrorKind::BadNumber,
            ),
            (
                "default deny\ndeny r NO_SUCH_MSR",
                2,
                8,
                "NO_SUCH_MSR",
                ParseErrorKind::UnknownName,
            ),
            (
                "default deny\ndeny r 0x10-0x5",
                2,
                8,
                "0x10-0x5",
                ParseErrorKind::Reversed {
                    first: 0x10,
                    last: 5,
                },
            ),
            (
                "default deny\ndeny r 0x10+0",
                2,
                8,
                "0x10+0",
                ParseErrorKind::ZeroCount,
            ),
            (
                "default deny\ndeny r 0xffffffff+2",
                2,
                8,
                "0xffffffff+2",
                ParseErrorKind::PastEnd {
                    base: u32::MAX,
                    count: 2,
                },
            ),
            (
                "default deny\ndeny r 0x10+zz",
                2,
                13,
                "zz",
                ParseErrorKind::BadNumber,
            ),
            (
                "default deny\ndeny r 0x10 0x20",
                2,
                13,
                "0x20",
                ParseErrorKind::Trailing,
            ),
        ];
        for (text, line, column, token, kind) in cases {
            let e = err(text);
            assert_eq!(
                (e.line(), e.column(), e.token(), e.kind()),
                (line, column, token, kind),
                "{text:?}"
            );
            let shown = std::format!("{e}");
            assert!(
                shown.starts_with(&std::format!("line {line}, column {column}: ")),
                "{shown}"
            );
            assert!(shown.contains(token), "{shown}");
        }
        let e = Policy::<1>::parse("default deny\ndeny r 1\ndeny w 2").unwrap_err();
        assert_eq!(
            (e.line(), e.kind()),
            (3, ParseErrorKind::TooManyRules { capacity: 1 })
        );
        // Columns count characters, not bytes.
        let e = err("default deny # é\ndeny r é");
        assert_eq!((e.line(), e.column(), e.token()), (2, 8, "é"));
        let e = Policy::<4>::parse_bytes(b"default deny\ndeny r \xff").unwrap_err();
        assert_eq!(
            (e.line(), e.column(), e.kind()),
            (2, 8, ParseErrorKind::NotUtf8)
        );
    }

    fn policy() -> impl Strategy<Value = Policy<8>> {
        let rule = (any::<u32>(), 0u32..0x5000, 1u32..=3, any::<bool>()).prop_map(
            |(first, len, a, deny)| {
                Rule::new(
                    first,
                    first.saturating_add(len),
                    Access::from_bits_truncate(a),
                    if deny { Action::Deny } else { Action::Allow },
                )
            },
        );
        (any::<bool>(), proptest::collection::vec(rule, 0..8)).prop_map(|(deny, rules)| {
            let mut p = Policy::new(if deny { Action::Deny } else { Action::Allow });
            for r in rules {
                p.push(r).unwrap();
            }
            p
        })
    }

    #[test]
    fn statements_carry_their_spans() {
        let text =
            "# header\n\n  default deny   # why\n\tallow  rw 0x10-0x1f\t# TSC\ndeny w 0x48\n";
        let parsed: vec::Vec<_> = statements(text).map(Result::unwrap).collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].0, Statement::Default(Action::Deny));
        assert_eq!(
            (parsed[0].1.line, parsed[0].1.column, parsed[0].1.text),
            (3, 3, "default deny")
        );
        assert_eq!(
            parsed[1].0,
            Statement::Rule(Rule::new(0x10, 0x1f, Access::READ_WRITE, Action::Allow))
        );
        assert_eq!(
            (parsed[1].1.line, parsed[1].1.column, parsed[1].1.text),
            (4, 2, "allow  rw 0x10-0x1f")
        );
        assert_eq!((parsed[2].1.line, parsed[2].1.text), (5, "deny w 0x48"));
    }

    #[test]
    fn statements_stop_at_the_first_error_and_report_a_missing_default_last() {
        let mut it = statements("deny r 1\nallow q 2\ndeny r 3\n");
        assert!(matches!(it.next(), Some(Ok((Statement::Rule(_), _)))));
        let e = it.next().unwrap().unwrap_err();
        assert_eq!((e.line(), e.kind()), (2, ParseErrorKind::ExpectedAccess));
        assert!(it.next().is_none(), "fused after an error");
        let mut it = statements("deny r 1\n");
        assert!(it.next().unwrap().is_ok());
        assert_eq!(
            it.next().unwrap().unwrap_err().kind(),
            ParseErrorKind::MissingDefault
        );
        assert!(it.next().is_none());
    }

    #[test]
    fn policy_text_names_the_first_bad_byte() {
        let e = policy_text(b"default deny\ndeny r \xff").unwrap_err();
        assert_eq!(
            (e.line(), e.column(), e.kind()),
            (2, 8, ParseErrorKind::NotUtf8)
        );
        assert_eq!(policy_text(b"default deny"), Ok("default deny"));
    }

    proptest! {
        #[test]
        fn statements_give_the_rules_parse_keeps_at_their_lines(policy in policy()) {
            let text = std::format!("{policy}");
            let lines: vec::Vec<&str> = text.split('\n').collect();
            let mut rules = vec::Vec::new();
            for item in statements(&text) {
                let (statement, span) = item.unwrap();
                // The printed text has one statement per line, no blanks around it but a comment.
                prop_assert!(lines[span.line as usize - 1].starts_with(span.text));
                prop_assert_eq!(span.column, 1);
                if let Statement::Rule(rule) = statement {
                    rules.push(rule);
                }
            }
            prop_assert_eq!(&rules[..], policy.rules());
        }

        #[test]
        fn text_round_trips(policy in policy()) {
            let text = std::format!("{policy}");
            prop_assert_eq!(Policy::<8>::parse(&text), Ok(policy), "{}", text);
        }

        #[test]
        fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Policy::<4>::parse_bytes(&bytes);
        }

        #[test]
        fn parser_never_panics_on_policy_like_text(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("default"), Just("allow"), Just("deny"), Just("rw"), Just("r"), Just("w"),
                    Just("0x10"), Just("-"), Just("+"), Just("0xffffffff"), Just("\n"), Just("#"),
                    Just(" "), Just("IA32_TSC"), Just("HYPERV"), Just("+0"), Just("é"), Just("\t"),
                ],
                0..40,
            )
        ) {
            let text: std::string::String = words.concat();
            if let Err(e) = Policy::<4>::parse(&text) {
                prop_assert!(e.line() >= 1 && e.column() >= 1);
                prop_assert!(e.line() as usize <= text.split('\n').count().max(1));
            }
        }
    }
}
