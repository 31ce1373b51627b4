//! How commands report: failures and their exit statuses, JSON output, and the words messages
//! share (MSR labels, instruction names, plurals).

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use msr_filter_core::{names, AccessType};
use msr_filter_kvm::guest::HarnessError;
use msr_filter_kvm::KvmError;

/// Exit status 1: a policy, verify or demo failure.
pub(crate) const FAILURE: u8 = 1;
/// Exit status 2: the environment (no /dev/kvm, permission, KVM failure); for `diff`, a bad
/// policy; a usage error.
pub(crate) const ENVIRONMENT: u8 = 2;

/// Why a command failed: the message and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: u8,
    /// Already located (`FILE:LINE:COL: ...` or `FILE: ...`): printed without the prefix.
    located: bool,
    message: String,
}

impl Failure {
    pub(crate) fn new(message: impl fmt::Display) -> Failure {
        Failure {
            status: FAILURE,
            located: false,
            message: message.to_string(),
        }
    }

    pub(crate) fn environment(message: impl fmt::Display) -> Failure {
        Failure {
            status: ENVIRONMENT,
            located: false,
            message: message.to_string(),
        }
    }

    pub(crate) fn located(message: String) -> Failure {
        Failure {
            status: FAILURE,
            located: true,
            message,
        }
    }

    /// A failure with this status whose output is already printed: nothing more to say.
    pub(crate) fn quiet(status: u8) -> Failure {
        Failure {
            status,
            located: true,
            message: String::new(),
        }
    }

    /// The same failure with another exit status.
    pub(crate) fn with_status(self, status: u8) -> Failure {
        Failure { status, ..self }
    }

    pub(crate) fn report(&self) {
        if self.message.is_empty() {
            return;
        }
        // Standard error that cannot be written (`2>/dev/full`) leaves only the exit status.
        let mut err = io::stderr().lock();
        let _ = if self.located {
            writeln!(err, "{}", self.message)
        } else {
            writeln!(err, "msrfilter: {}", self.message)
        };
    }
}

impl From<HarnessError> for Failure {
    /// A guest harness error: the environment (no /dev/kvm, a failed KVM call) or a guest that
    /// behaved unexpectedly.
    fn from(e: HarnessError) -> Failure {
        match e {
            HarnessError::NoKvm(_) | HarnessError::Kvm { .. } => Failure::environment(e),
            _ => Failure::new(e),
        }
    }
}

impl From<KvmError> for Failure {
    fn from(e: KvmError) -> Failure {
        Failure::environment(e)
    }
}

/// Prints a JSON document on standard output, pretty.
pub(crate) fn print_json(value: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("a serde_json::Value always serializes")
    );
}

/// `0x48 (IA32_SPEC_CTRL)`, or `0x12345678` for an MSR without a name.
pub(crate) fn msr_label(index: u32) -> String {
    names::Label(index).to_string()
}

/// `rdmsr` or `wrmsr`.
pub(crate) fn insn(access: AccessType) -> &'static str {
    match access {
        AccessType::Read => "rdmsr",
        AccessType::Write => "wrmsr",
    }
}

/// `1 range`, `2 ranges`.
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The first error writing standard output; later writes are skipped.
static OUTPUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to standard output for [`out!`] and [`outln!`]: never panics (`println!` does on a
/// closed pipe or a full disk); the first error is kept for [`finish_output`].
pub(crate) fn write_out(args: fmt::Arguments<'_>, newline: bool) {
    let mut error = OUTPUT_ERROR.lock().unwrap_or_else(|e| e.into_inner());
    if error.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        *error = Some(e);
    }
}

/// Flushes standard output and says how writing it went: `Ok` also for a closed pipe (a reader
/// such as `head` that stopped reading ends the command quietly), `Err` naming the output for
/// any other failure (a full disk, a closed descriptor).
pub(crate) fn finish_output() -> Result<(), Failure> {
    if stdout_was_closed() {
        return Err(Failure::new(
            "cannot write to standard output: it was closed when msrfilter started",
        ));
    }
    let mut error = OUTPUT_ERROR.lock().unwrap_or_else(|e| e.into_inner());
    if error.is_none() {
        if let Err(e) = io::stdout().lock().flush() {
            *error = Some(e);
        }
    }
    match error.take() {
        None => Ok(()),
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(Failure::new(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// Whether the program started with standard output closed (`>&-`). Rust's runtime then
/// opens `/dev/null` read-write in its place, so writes succeed and vanish; a shell redirection
/// to `/dev/null` opens it write-only. Linux only (`/proc/self/fdinfo`); elsewhere false.
fn stdout_was_closed() -> bool {
    let Ok(target) = std::fs::read_link("/proc/self/fd/1") else {
        return false;
    };
    if target != std::path::Path::new("/dev/null") {
        return false;
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/fdinfo/1") else {
        return false;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 == 0o2) // O_RDWR
}

/// `print!` that never panics: see [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::report::write_out(format_args!($($arg)*), false)
    };
}

/// `println!` that never panics: see [`write_out`].
macro_rules! outln {
    () => {
        $crate::report::write_out(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::report::write_out(format_args!($($arg)*), true)
    };
}

pub(crate) use {out, outln};
