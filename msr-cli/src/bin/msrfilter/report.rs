//! How commands report: failures and their exit statuses, JSON output, and the words messages
//! share (MSR labels, instruction names, plurals).

use std::fmt;

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
        if self.located {
            eprintln!("{}", self.message);
        } else {
            eprintln!("msrfilter: {}", self.message);
        }
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
    println!(
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
