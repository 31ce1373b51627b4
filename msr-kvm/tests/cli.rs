//! Tests of the `msrfilter` command: the built binary, run as a user would.
//!
//! `verify` and `demo` need `/dev/kvm`; without it their tests print `SKIPPED: no /dev/kvm`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use msr_kvm::guest::kvm_available;

const GOOD: &str = "\
default allow
deny rw 0x474f4f00        # a fabricated MSR
deny w  IA32_SPEC_CTRL
allow r 0xc0000080-0xc0000084
deny rw 0x40000000+0x100
";

/// What one run of `msrfilter` did.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn msrfilter_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_msrfilter"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run msrfilter");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status.code().expect("msrfilter exited by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn msrfilter(args: &[&str]) -> Run {
    msrfilter_with_stdin(args, None)
}

/// A policy file under the temporary directory, removed when dropped.
struct TempPolicy(PathBuf);

impl TempPolicy {
    fn new(name: &str, text: &str) -> TempPolicy {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "msrfilter-cli-{}-{n}-{name}.policy",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempPolicy(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// Whether some line of `text` starts with these whitespace-separated words.
fn has_row(text: &str, words: &[&str]) -> bool {
    text.lines().any(|l| {
        l.split_whitespace()
            .take(words.len())
            .eq(words.iter().copied())
    })
}

fn kvm_or_skip() -> bool {
    if kvm_available() {
        true
    } else {
        println!("SKIPPED: no /dev/kvm");
        false
    }
}

#[test]
fn check_prints_the_packed_filter() {
    let p = TempPolicy::new("good", GOOD);
    let run = msrfilter(&["check", p.path()]);
    assert_eq!(run.status, 0, "{run:?}");
    let out = &run.stdout;
    assert!(out.contains("filter: default allow"), "{run:?}");
    assert!(
        has_row(out, &["0", "0x48", "0x48", "1", "w", "8", "IA32_SPEC_CTRL"]),
        "{run:?}"
    );
    assert!(
        has_row(out, &["1", "0x40000000", "0x400000ff", "256", "rw", "32"]),
        "{run:?}"
    );
    assert!(
        has_row(out, &["2", "0x474f4f00", "0x474f4f00", "1", "rw", "8"]),
        "{run:?}"
    );
    assert!(
        out.contains("total: 3 ranges, 48 bitmap bytes; proven_minimal: yes"),
        "{run:?}"
    );
    assert!(
        !out.contains("warning:"),
        "a packed filter has no lints: {run:?}"
    );
    assert_eq!(out.lines().last(), Some("ok"), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
}

#[test]
fn check_reads_standard_input() {
    let run = msrfilter_with_stdin(&["check", "-"], Some(GOOD));
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("<stdin>: 4 rules, default allow"),
        "{run:?}"
    );
    let run = msrfilter_with_stdin(&["check", "-"], Some("default deny\ndeny r\n"));
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stderr.starts_with("<stdin>:2:7: "), "{run:?}");
}

#[test]
fn check_examples() {
    let run = msrfilter(&["check", &example("selftest-deny.policy")]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("filter: default deny"), "{run:?}");
    assert!(
        run.stdout.contains("total: 6 ranges, 4640 bitmap bytes"),
        "{run:?}"
    );
    let run = msrfilter(&["check", &example("demo.policy")]);
    assert_eq!(run.status, 0, "{run:?}");
}

#[test]
fn check_names_the_line_and_column_of_a_bad_policy() {
    let p = TempPolicy::new("bad", "default deny\nallow x 0x10\n");
    let run = msrfilter(&["check", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    let want = format!(
        "{}:2:7: expected the access `r`, `w` or `rw`, found `x`\n",
        p.path()
    );
    assert_eq!(run.stderr, want, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn check_refuses_to_deny_x2apic() {
    let p = TempPolicy::new("x2apic", "default allow\n\ndeny rw 0x800-0x80f  # no\n");
    let run = msrfilter(&["check", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    let first = run.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("{}: rule 0 ", p.path())),
        "{run:?}"
    );
    assert!(first.contains("x2APIC"), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "{}: note: rule 0: deny rw 0x800-0x80f (line 3)",
            p.path()
        )),
        "{run:?}"
    );
}

#[test]
fn check_missing_file_and_usage_errors() {
    let run = msrfilter(&["check", "/nonexistent/msrfilter.policy"]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("msrfilter: cannot read /nonexistent/msrfilter.policy: "),
        "{run:?}"
    );
    let run = msrfilter(&["check"]);
    assert_eq!(run.status, 2, "clap's usage status: {run:?}");
    let run = msrfilter(&["frobnicate"]);
    assert_eq!(run.status, 2, "{run:?}");
}

#[test]
fn explain_says_what_decides_and_which_rule() {
    let p = TempPolicy::new("explain", GOOD);
    let run = msrfilter(&["explain", p.path(), "IA32_SPEC_CTRL", "w"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "wrmsr 0x48 (IA32_SPEC_CTRL): deny — slot 0 (w 0x48) bit 0x0\n  \
         policy: deny, decided by rule 1: deny w IA32_SPEC_CTRL (line 3)\n",
        "{run:?}"
    );

    // Both accesses by default; names in any case and without the IA32_ prefix.
    let run = msrfilter(&["explain", p.path(), "spec_ctrl"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "rdmsr 0x48 (IA32_SPEC_CTRL): allow — no range matches: default allow\n  \
             policy: allow, decided by the default action: default allow (line 1)\n"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("wrmsr 0x48 (IA32_SPEC_CTRL): deny"),
        "{run:?}"
    );

    let run = msrfilter(&["explain", p.path(), "0x40000005", "r"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("rdmsr 0x40000005: deny — slot 1 (rw 0x40000000-0x400000ff) bit 0x5\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("decided by rule 3: deny rw 0x40000000+0x100 (line 5)"),
        "{run:?}"
    );

    // Decimal, and x2APIC.
    let run = msrfilter(&["explain", p.path(), "2050", "rw"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "rdmsr 0x802 (IA32_X2APIC_APICID): allow — x2APIC MSRs 0x800-0x8ff are never filtered by the kernel"
        ),
        "{run:?}"
    );
    assert_eq!(run.stdout.matches("never filtered").count(), 2, "{run:?}");

    let run = msrfilter(&["explain", p.path(), "0xc0000082", "r"]);
    assert!(
        run.stdout
            .contains("decided by rule 2: allow r 0xc0000080-0xc0000084 (line 4)"),
        "{run:?}"
    );
}

#[test]
fn explain_default_deny_and_bad_arguments() {
    let p = TempPolicy::new("deny", "default deny\nallow rw 0x10\n");
    let run = msrfilter(&["explain", p.path(), "0x11", "r"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("rdmsr 0x11 (KVM_WALL_CLOCK): deny — no range matches: default deny\n"),
        "{run:?}"
    );
    assert!(run
        .stdout
        .contains("decided by the default action: default deny (line 1)"));
    let run = msrfilter(&["explain", p.path(), "IA32_TSC", "r"]);
    assert!(run.stdout.contains("allow — slot 0"), "{run:?}");
    assert!(
        run.stdout.contains("rule 0: allow rw 0x10 (line 2)"),
        "{run:?}"
    );

    let run = msrfilter(&["explain", p.path(), "NO_SUCH_MSR"]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr.contains("unknown MSR name `NO_SUCH_MSR`"),
        "{run:?}"
    );
    let run = msrfilter(&["explain", p.path(), "0x10", "x"]);
    assert_eq!(run.status, 2, "{run:?}");
}

#[test]
fn help_documents_every_exit_status() {
    let run = msrfilter(&["--help"]);
    assert_eq!(run.status, 0, "{run:?}");
    for want in [
        "Exit status:",
        "  0  ",
        "  1  ",
        "  2  ",
        "/dev/kvm",
        "clap",
    ] {
        assert!(run.stdout.contains(want), "{want}: {run:?}");
    }
    for command in ["check", "explain", "verify", "demo"] {
        let run = msrfilter(&[command, "--help"]);
        assert_eq!(run.status, 0, "{run:?}");
        assert!(run.stdout.contains("Exit status:"), "{command}: {run:?}");
        assert!(run.stdout.contains("  0  "), "{command}: {run:?}");
        assert!(run.stdout.contains("  1  "), "{command}: {run:?}");
    }
}

#[test]
fn verify_refuses_an_invalid_policy_before_touching_kvm() {
    let p = TempPolicy::new("verify-bad", "default deny\ndeny rw X2APIC\n");
    let run = msrfilter(&["verify", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stderr.contains("x2APIC"), "{run:?}");
}

#[test]
fn verify_examples_on_the_kernel() {
    if !kvm_or_skip() {
        return;
    }
    for name in ["selftest-deny.policy", "demo.policy"] {
        let run = msrfilter(&["verify", &example(name)]);
        assert_eq!(run.status, 0, "{name}: {run:?}");
        assert!(
            run.stdout.contains(" agree, 0 disagree\n"),
            "{name}: {run:?}"
        );
        assert!(!run.stdout.contains("disagreement:"), "{name}: {run:?}");
    }
}

#[test]
fn verify_verbose_prints_every_probe() {
    if !kvm_or_skip() {
        return;
    }
    let p = TempPolicy::new("verify", GOOD);
    let run = msrfilter(&["verify", "--verbose", p.path()]);
    assert_eq!(run.status, 0, "{run:?}");
    // 6 fixed probes, plus the boundaries of 4 rules (0x474f4f00 and IA32_SPEC_CTRL give 3 each,
    // the ranges 4 each), none shared: 20 MSRs, read and written.
    assert!(
        run.stdout.contains("40 probes, 40 agree, 0 disagree\n"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(
            "wrmsr 0x48 (IA32_SPEC_CTRL): kernel deny (FILTER exit), filter deny, policy deny — agree"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("rdmsr 0x48 (IA32_SPEC_CTRL): kernel allow (completed), filter allow, policy allow — agree"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("rdmsr 0x800: kernel allow (#GP), filter allow, policy allow — agree"),
        "{run:?}"
    );
    assert_eq!(run.stdout.matches(" — agree\n").count(), 40, "{run:?}");
}

/// The demo's table row for access number `n`, split in words.
fn demo_row(out: &str, n: usize) -> Vec<String> {
    let prefix = n.to_string();
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|w| {
            w.first() == Some(&prefix) && w.get(1).is_some_and(|a| a == "rdmsr" || a == "wrmsr")
        })
        .unwrap_or_else(|| panic!("no row {n} in:\n{out}"))
}

#[test]
fn demo_fails_closed() {
    if !kvm_or_skip() {
        return;
    }
    let run = msrfilter(&["demo"]);
    assert_eq!(run.status, 0, "{run:?}");
    let out = &run.stdout;
    // The built-in policy is examples/demo.policy.
    let file = std::fs::read_to_string(example("demo.policy")).unwrap();
    let shown: String = file.lines().map(|l| format!("    {l}\n")).collect();
    assert!(out.contains(&shown), "{run:?}");

    assert_eq!(
        demo_row(out, 1)[..5],
        ["1", "rdmsr", "0x10", "IA32_TSC", "-"]
    );
    assert_eq!(demo_row(out, 1)[5], "—", "TSC is handled in the kernel");
    assert_eq!(demo_row(out, 2)[5..7], ["FILTER", "0x10001"]);
    assert_eq!(demo_row(out, 5)[5..8], ["FILTER", "0x2a", "Shadow"]);
    assert_eq!(demo_row(out, 10)[5..7], ["FILTER", "#GP"], "read-only");
    // Denied by the policy, no handler: fail closed.
    let row = demo_row(out, 11);
    assert_eq!(row[2..4], ["0x474f4f00", "fabricated"]);
    assert_eq!(row[5..8], ["FILTER", "#GP", "fail-closed"]);
    // Unknown to KVM: #GP by default.
    let row = demo_row(out, 13);
    assert_eq!(row[2], "0x12345678");
    assert_eq!(row[row.len() - 1], "✓");
    if !out.contains("kvm.ignore_msrs=Y") {
        assert!(row.contains(&"UNKNOWN".to_string()), "{run:?}");
        assert!(row.contains(&"#GP".to_string()), "{run:?}");
    }
    assert!(!out.contains('✗'), "{run:?}");
    assert!(
        out.contains("demo ok: all 15 accesses ended as expected"),
        "{run:?}"
    );
    assert!(
        has_row(
            out,
            &["Counting(Shadow)", "0x4b564dff", "-", "rw", "1", "1", "0"]
        ),
        "{run:?}"
    );
}

#[test]
fn demo_ignore_msrs_reads_unknown_msrs_as_zero() {
    if !kvm_or_skip() {
        return;
    }
    let run = msrfilter(&["demo", "--ignore-msrs"]);
    assert_eq!(run.status, 0, "{run:?}");
    let out = &run.stdout;
    let row = demo_row(out, 13);
    assert_eq!(row[..3], ["13", "rdmsr", "0x12345678"]);
    assert!(row.contains(&"0x0".to_string()), "{run:?}");
    assert!(demo_row(out, 14).contains(&"ok".to_string()), "{run:?}");
    // The policy still fails closed where it denies.
    assert_eq!(demo_row(out, 11)[5..7], ["FILTER", "#GP"]);
    assert!(out.contains("demo ok"), "{run:?}");
}

#[test]
fn demo_with_a_policy_file() {
    if !kvm_or_skip() {
        return;
    }
    let run = msrfilter(&["demo", "--policy", &example("demo.policy")]);
    assert_eq!(run.status, 0, "{run:?}");
    // Default deny: the TSC and the unknown MSRs are denied too, and fail closed; the handlers
    // still answer.
    let p = TempPolicy::new("demo-deny", "default deny\n");
    let run = msrfilter(&["demo", "--policy", p.path()]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(demo_row(&run.stdout, 1)[5..7], ["FILTER", "#GP"]);
    assert_eq!(demo_row(&run.stdout, 2)[5..7], ["FILTER", "0x10001"]);
    assert_eq!(demo_row(&run.stdout, 13)[5..7], ["FILTER", "#GP"]);
}

#[test]
fn demo_refuses_an_invalid_policy() {
    let p = TempPolicy::new("demo-bad", "default allow\ndeny rw 0x8ff\n");
    let run = msrfilter(&["demo", "--policy", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!("{}: rule 0", p.path())),
        "{run:?}"
    );
    assert!(run.stderr.contains("x2APIC"), "{run:?}");
}
