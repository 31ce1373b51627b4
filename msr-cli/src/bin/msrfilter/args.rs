//! The command line: subcommands, their options and help texts, and the exit statuses.

use clap::{Parser, Subcommand, ValueEnum};
use msr_filter_core::{AccessType, MsrText};

pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success: the policy packs or the raw filter is one the kernel accepts (check, explain,
     pack), nothing changes (diff), the kernel agrees with the model on every probe (verify),
     every demo access ended as expected (demo)
  1  failure: the policy cannot be read, parsed or packed, or the raw filter cannot be read or
     the kernel would refuse it (check, explain, pack, verify, demo); the policies decide some
     access differently (diff: 1 means \"changed\"); the kernel disagreed with the model
     (verify); a demo access ended differently than expected, or the guest did something
     unexpected (demo, verify)
  2  environment: /dev/kvm is missing or cannot be opened read-write, KVM lacks a capability, or
     a KVM call failed (verify, demo); the exact reason is printed. For diff only, a policy
     that cannot be read, parsed or packed (2 there because 1 means \"changed\"). Command-line
     usage errors also exit with 2 (clap's status for them).";

/// Check, explain, pack, diff and verify KVM MSR filter policies, and demo them on the real
/// kernel.
///
/// A POLICY is a file in msr-filter-core's policy text format (`default allow|deny`, then rules like
/// `deny rw 0x474f4f00`, `allow r 0xc0000080-0xc0000084`, `deny w IA32_SPEC_CTRL`; later rules
/// override earlier ones); `-` reads it from standard input. With `--raw`, `check` and `explain`
/// read instead a raw filter in JSON (`struct kvm_msr_filter` as another VMM would pass it; see
/// `msrfilter check --help`). Policy errors print as `FILE:LINE:COLUMN: message`, packing, JSON
/// and kernel-refusal errors as `FILE: message`, every other error as `msrfilter: message`, all
/// on standard error.
#[derive(Debug, Parser)]
#[command(name = "msrfilter", version, after_help = EXIT_STATUS_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// The most bytes read from any input file or standard input (policies, raw filters);
    /// larger input is refused, read no further than the limit.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = crate::load::DEFAULT_MAX_INPUT)]
    pub(crate) max_input_bytes: u64,
}

/// The exit statuses of `check`.
pub(crate) const CHECK_EXIT_STATUS: &str = "\
Exit status:
  0  the policy packs into a kernel filter, or the kernel accepts the raw filter (warnings
     included)
  1  the policy cannot be read, parsed or packed; the raw filter cannot be read, or the kernel
     would refuse it (KVM_X86_SET_MSR_FILTER fails with EINVAL or EFAULT)
  2  command-line usage error";

/// The JSON form of a raw filter, for `check --help`.

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Parse and pack a policy (or judge a raw filter); print the filter, its lints and exit
    /// storms, then `ok`.
    ///
    /// Prints the filter's default action, a table of its ranges (slot, base, last MSR, nmsrs,
    /// flags r/w/rw, bitmap bytes), the totals and, for a policy, whether the packing is proven
    /// minimal; then every lint (what the kernel would accept but ignore) and every exit storm
    /// (an MSR KVM passes straight to the hardware that the filter denies, so every guest access
    /// exits to user space) as a `warning:` line, then `ok`. Warnings do not change the exit
    /// status.
    ///
    /// With --raw, FILE is a raw filter in JSON and the verdict is the kernel's, exactly: a
    /// filter KVM_X86_SET_MSR_FILTER would refuse is reported with the rule it breaks and the
    /// errno (EINVAL or EFAULT).
    ///
    /// With --format json, prints one JSON object: {"accepted": bool, "error": {"errno":
    /// "EINVAL", "message": ...} or null, "filter": the filter in the JSON form or null,
    /// "ranges": N, "bitmap_bytes": N, "lints": [MESSAGE, ...], "exit_storms": [{"msr":
    /// "0xc0000100", "name": "FS_BASE", "denied": "r", "message": ...}]}, plus "proven_minimal"
    /// for a policy. For a refused raw filter, "ranges" and "bitmap_bytes" count the non-empty
    /// slots and the bitmap bytes as given. Errors reading, parsing or packing print on standard
    /// error only.
    #[command(after_long_help = format!(
        "{CHECK_EXIT_STATUS}\n\nA raw filter in JSON (--raw) is one documented form of struct kvm_msr_filter:\n{}",
        msr_filter_cli::json::FORM
    ))]
    Check {
        /// The policy file, or with --raw the raw filter in JSON (`-` for standard input).
        #[arg(value_name = "FILE")]
        file: String,
        /// FILE is a raw filter in JSON (the form below), not a policy.
        #[arg(long)]
        raw: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Explain how the filter decides one MSR, and which policy rule wanted it.
    ///
    /// Prints one line per access (reads, then writes, unless one is given): the decision and
    /// what made it (the range slot and bit, the filter's default action, or the kernel's x2APIC
    /// exemption), then, for a policy, the policy rule that decided it (`rule N: TEXT (line L)`,
    /// N counting rules from 0 as packing errors do) or the policy's default action.
    ///
    /// With --raw, FILE is a raw filter in JSON (see `msrfilter check --help`) and only the
    /// filter's decision is explained.
    ///
    /// With --format json, prints one JSON object per access (a JSON array of two when both are
    /// explained): {"msr": "0x48", "name": "IA32_SPEC_CTRL" or null, "access": "read"|"write",
    /// "decision": "allow"|"deny", "decided_by": "range"|"default"|"x2apic"|"no-filter",
    /// "range": {"slot": S, "bit": B} or null}, and for a policy "policy": {"decision":
    /// "allow"|"deny", "decided_by": "rule"|"default"|"x2apic", "rule": N or null, "text": the
    /// rule or default line or null, "line": L or null}.
    #[command(after_long_help = "\
Exit status:
  0  explained
  1  the policy cannot be read, parsed or packed, the raw filter cannot be read or the kernel
     would refuse it, or (a bug) the filter and the policy disagree
  2  command-line usage error, e.g. an unknown MSR name")]
    Explain {
        /// The policy file, or with --raw the raw filter in JSON (`-` for standard input).
        #[arg(value_name = "FILE")]
        file: String,
        /// The MSR: a number (`0x` hex or decimal) or a name from msr_filter_core::names
        /// (`IA32_SPEC_CTRL`, `spec_ctrl`, `MSR_IA32_SPEC_CTRL`, ...).
        #[arg(value_parser = parse_msr)]
        msr: u32,
        /// The access to explain: `r` (rdmsr), `w` (wrmsr) or `rw`. Default: both.
        #[arg(value_enum)]
        access: Option<AccessArg>,
        /// FILE is a raw filter in JSON, not a policy.
        #[arg(long)]
        raw: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Pack a policy and print the filter as JSON, a C header or Rust consts.
    ///
    /// `--emit json`: the filter in the JSON form `check --raw` reads, pretty-printed.
    ///
    /// `--emit c`: a self-contained C header with static const u64 bitmaps and
    /// `static inline void NAME_fill(struct kvm_msr_filter *filter)`; it compiles with
    /// `-std=c11 -Wall -Wextra -Werror -pedantic` next to <linux/kvm.h>. Enable
    /// KVM_CAP_X86_USER_SPACE_MSR with KVM_MSR_EXIT_REASON_FILTER before installing it.
    ///
    /// `--emit rust`: `pub const`s of msr-filter-core's raw types, ending with
    /// `NAME_FILTER: msr_filter_core::RawFilter<'static>`; load it with
    /// `msr_filter_core::Filter::from_raw(&NAME_FILTER)` (no_std, no parsing at run time).
    ///
    /// C and Rust carry the policy text in a comment. The output goes to standard output; run
    /// `check` for lints and exit-storm warnings.
    #[command(after_long_help = "\
Exit status:
  0  packed and printed
  1  the policy cannot be read, parsed or packed (the reason is printed as by `check`)
  2  command-line usage error")]
    Pack {
        /// The policy file (`-` for standard input).
        policy: String,
        /// What to print.
        #[arg(long, value_enum)]
        emit: Emit,
        /// The prefix of the generated identifiers (`NAME_fill`, `NAME_FILTER`), made a C/Rust
        /// identifier by the emitter (other characters than ASCII letters, digits and `_` become
        /// `_`; lower case in C, upper case in Rust). Default: the policy file's stem
        /// (`policy` for standard input). Not used by `--emit json`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show what changes from one policy to another, for every MSR and access.
    ///
    /// Prints every maximal run of MSRs whose decision changes (msr_filter_core::diff), reads first,
    /// then writes, each in MSR order, as `read  0x10-0x1f (16 MSRs): deny -> allow`, naming the
    /// MSR when the run is one named MSR (`write 0x48 (IA32_SPEC_CTRL): deny -> allow`) and the
    /// named ends of a longer run (`0xc0000080-0xc0000084 (5 MSRs, EFER..SYSCALL_MASK)`), then
    /// `N changes`. The x2APIC MSRs, which the kernel never filters, never change. Both
    /// policies must pack into kernel filters.
    #[command(after_long_help = "\
Exit status:
  0  nothing changes: the policies decide every access of every MSR the same
  1  something changes (every change is listed)
  2  a policy cannot be read, parsed or packed, or a command-line usage error (a bad policy is
     2 here, not 1 as elsewhere, because 1 means \"changed\")")]
    Diff {
        /// The policy in force (`-` for standard input).
        old: String,
        /// The policy to replace it (`-` for standard input, if OLD is not).
        new: String,
    },
    /// Print an allow-list policy of the MSRs this host's KVM supports, optionally only those a
    /// CPU profile also lists.
    ///
    /// Asks /dev/kvm for KVM_GET_MSR_INDEX_LIST (the MSRs KVM saves, restores and emulates) and
    /// KVM_GET_MSR_FEATURE_INDEX_LIST, and prints a policy: `default deny`, then `allow rw` for
    /// each run of consecutive listed MSRs (named where known). With --profile, only the MSRs
    /// the profile also lists are allowed, so a guest sees no host MSR the profile lacks: the
    /// host's other MSRs fall to `default deny`, and the profile's MSRs this host does not
    /// support are named in a comment. The x2APIC MSRs are left out (the kernel never filters
    /// them). The policy is packed and check's verdict (ranges, bitmap bytes, lints) follows as
    /// comments, so the whole output is a policy file.
    #[command(after_long_help = "\
A profile is a file of MSRs, one per line (a number, 0x hex or decimal, or a name; `#` starts a
comment), or a JSON array of MSRs (numbers or strings).

Exit status:
  0  printed a policy that packs
  1  the profile cannot be read or parsed, or the policy does not pack
  2  /dev/kvm is missing or a KVM call failed; or a command-line usage error")]
    FromKvm {
        /// A CPU profile's MSRs: allow only the MSRs both it and this host list.
        #[arg(long, value_name = "FILE")]
        profile: Option<String>,
    },
    /// Install the packed filter in a real KVM VM and check the kernel decides as the model does.
    ///
    /// Creates a one-vCPU guest, enables user-space MSR exits for FILTER only, installs the
    /// packed filter, then probes, for rdmsr and wrmsr (of 0), every rule boundary (first-1,
    /// first, last and last+1 of each rule) plus 0x0, 0x7ff, 0x800, 0x8ff, 0x900 and 0xffffffff.
    /// An access that exits with reason FILTER was denied by the kernel's filter; any other
    /// outcome was allowed. Each kernel decision is compared with the filter model
    /// (`Filter::decide`) and the policy (`Policy::decide`). Prints a summary `N probes, M agree,
    /// K disagree` and every disagreement; `--verbose` prints every probe.
    #[command(after_long_help = "\
Exit status:
  0  the kernel, the filter model and the policy agree on every probe
  1  a disagreement, a guest that behaved unexpectedly, or a policy that cannot be read, parsed
     or packed
  2  /dev/kvm is missing or cannot be opened read-write, KVM lacks a capability, a KVM call
     failed; or a command-line usage error")]
    Verify {
        /// The policy file (`-` for standard input).
        policy: String,
        /// Print one line per probe.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Run a tiny guest that reads and writes MSRs under a policy with built-in handlers.
    ///
    /// The policy (built in unless --policy is given; the built-in one is msr-cli/examples/demo.policy)
    /// gets handlers: CORE_THREAD_COUNT reads a constant, TSC_AUX is a per-vCPU shadow register,
    /// PRED_CMD writes are dropped, 0x4b564dff is a counted shadow register, and
    /// ARCH_CAPABILITIES reads a constant while writes to it get #GP. User-space exits are
    /// enabled for UNKNOWN and INVAL too. The guest runs a list of accesses; the table shows,
    /// for each, the exit reason (FILTER, UNKNOWN, INVAL, or — when the kernel handled it),
    /// the outcome (the value read, `ok`, or `#GP`) and who handled it; then the handler and
    /// route counters. Every outcome is checked against what the demo expects, so the demo is
    /// also a smoke test.
    #[command(after_long_help = "\
Exit status:
  0  every access ended as expected
  1  an access ended differently than expected, the guest behaved unexpectedly, or the policy
     cannot be read, parsed or packed together with the handlers
  2  /dev/kvm is missing or cannot be opened read-write, KVM lacks a capability, a KVM call
     failed; or a command-line usage error")]
    Demo {
        /// Use this policy instead of the built-in one (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        policy: Option<String>,
        /// Read MSRs KVM does not know as 0 and drop writes to them
        /// (`DispatcherBuilder::ignore_unknown_msrs`, the per-VM `kvm.ignore_msrs=1`), instead
        /// of injecting #GP.
        #[arg(long)]
        ignore_msrs: bool,
        /// Instead: show a live replacement. Two vCPU threads of one VM read MSRs in loops while
        /// the policy is replaced 200 times between two tables (LiveDispatcher); prints which
        /// table served each exit, the mis-routed exits and the #GP (both must be 0).
        #[arg(long, conflicts_with_all = ["policy", "ignore_msrs"])]
        swap: bool,
    },
}

/// An access on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AccessArg {
    /// rdmsr.
    R,
    /// wrmsr.
    W,
    /// rdmsr and wrmsr.
    Rw,
}

impl AccessArg {
    pub(crate) fn types(self) -> &'static [AccessType] {
        match self {
            AccessArg::R => &[AccessType::Read],
            AccessArg::W => &[AccessType::Write],
            AccessArg::Rw => &AccessType::ALL,
        }
    }
}

/// The output of `check` and `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Lines for people.
    Text,
    /// One JSON document on standard output.
    Json,
}

/// What `pack` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Emit {
    /// The filter in the JSON form `check --raw` reads.
    Json,
    /// A C header for <linux/kvm.h>.
    C,
    /// Rust consts of msr-filter-core's raw types.
    Rust,
}

/// Parses an MSR argument as policy text writes MSRs: `0x` hex, decimal, or a name.
fn parse_msr(s: &str) -> Result<u32, String> {
    match msr_filter_core::parse_msr(s) {
        MsrText::Index(index) => Ok(index),
        MsrText::BadNumber => Err(format!(
            "bad MSR number `{s}` (write 0x-prefixed hex or decimal)"
        )),
        MsrText::UnknownName => Err(format!(
            "unknown MSR name `{s}` (give a number, 0x hex or decimal, or a name from msr_filter_core::names)"
        )),
    }
}
