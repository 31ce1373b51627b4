//! Tests of the `msrfilter` command: the built binary, run as a user would.
//!
//! `verify` and `demo` need `/dev/kvm`; without it their tests print `SKIPPED: no /dev/kvm`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use msr_filter_kvm::guest::kvm_available;

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
        TempPolicy::with_extension(name, "policy", text)
    }

    /// A file with another extension (`json` for raw filters).
    fn with_extension(name: &str, extension: &str, text: &str) -> TempPolicy {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "msrfilter-cli-{}-{n}-{name}.{extension}",
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
        .join("examples")
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
    // A packed filter has no lints (they all begin `range N`); its only warning is the exit
    // storm of the SPEC_CTRL writes it denies.
    assert!(
        !out.contains("warning: range "),
        "a packed filter has no lints: {run:?}"
    );
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{run:?}");
    assert!(
        warnings[0].starts_with("warning: IA32_SPEC_CTRL 0x48 is denied for writes: "),
        "{run:?}"
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

/// The lines of a `check` output from the `filter:` line to the `total:` line, inclusive of
/// neither's suffix: the default action and the range table, then the totals up to `;`.
fn filter_table(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("filter: "))
        .take_while(|l| !l.starts_with("total: "))
        .map(str::to_string)
        .collect();
    let total = out
        .lines()
        .find(|l| l.starts_with("total: "))
        .unwrap_or_else(|| panic!("no total in:\n{out}"));
    lines.push(total.split(';').next().unwrap().to_string());
    lines
}

fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

#[test]
fn pack_emit_json_round_trips_through_check_raw() {
    let p = TempPolicy::new("pack-json", GOOD);
    let packed = msrfilter(&["pack", p.path(), "--emit", "json"]);
    assert_eq!(packed.status, 0, "{packed:?}");
    assert!(packed.stderr.is_empty(), "{packed:?}");
    // Pretty-printed: more than one line.
    assert!(packed.stdout.lines().count() > 3, "{packed:?}");
    let emitted = json_of(&packed);
    let raw = TempPolicy::with_extension("pack-json", "json", &packed.stdout);

    let checked = msrfilter(&["check", "--raw", raw.path()]);
    assert_eq!(checked.status, 0, "{checked:?}");
    assert!(
        checked.stdout.starts_with(&format!(
            "{}: raw filter, 3 slots given; the kernel accepts it\n",
            raw.path()
        )),
        "{checked:?}"
    );
    let policy = msrfilter(&["check", p.path()]);
    assert_eq!(policy.status, 0, "{policy:?}");
    let table = filter_table(&checked.stdout);
    assert_eq!(table, filter_table(&policy.stdout), "{checked:?}");
    assert_eq!(table.last().unwrap(), "total: 3 ranges, 48 bitmap bytes");
    assert_eq!(checked.stdout.lines().last(), Some("ok"), "{checked:?}");

    // The same filter, from standard input too, and in check's JSON.
    let run = msrfilter_with_stdin(
        &["check", "--raw", "-", "--format", "json"],
        Some(&packed.stdout),
    );
    assert_eq!(run.status, 0, "{run:?}");
    let report = json_of(&run);
    assert_eq!(report["accepted"], true, "{run:?}");
    assert_eq!(report["filter"], emitted, "{run:?}");
    assert_eq!(report["ranges"], 3, "{run:?}");
    assert_eq!(report["bitmap_bytes"], 48, "{run:?}");
}

#[test]
fn pack_emit_c_and_rust() {
    let p = TempPolicy::new("pack-c", GOOD);
    let run = msrfilter(&["pack", p.path(), "--emit", "c"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout.contains("_fill(struct kvm_msr_filter *filter)"),
        "{run:?}"
    );
    assert!(run.stdout.contains("#include <linux/kvm.h>"), "{run:?}");
    // The policy text rides along in a comment.
    assert!(
        run.stdout.contains(" *   deny w  IA32_SPEC_CTRL"),
        "{run:?}"
    );

    // The default name is the file's stem, made an identifier.
    let run = msrfilter(&["pack", &example("selftest-deny.policy"), "--emit", "c"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("static inline void selftest_deny_fill(struct kvm_msr_filter *filter)"),
        "{run:?}"
    );
    let run = msrfilter(&["pack", p.path(), "--emit", "c", "--name", "my-vmm"]);
    assert!(
        run.stdout
            .contains("static inline void my_vmm_fill(struct kvm_msr_filter *filter)"),
        "{run:?}"
    );

    let run = msrfilter(&["pack", p.path(), "--emit", "rust"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("_FILTER: msr_filter_core::RawFilter<'static>"),
        "{run:?}"
    );
    let run = msrfilter_with_stdin(
        &["pack", "-", "--emit", "rust", "--name", "demo"],
        Some(GOOD),
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("pub const DEMO_FILTER: msr_filter_core::RawFilter<'static>"),
        "{run:?}"
    );
    let run = msrfilter_with_stdin(&["pack", "-", "--emit", "rust"], Some(GOOD));
    assert!(
        run.stdout
            .contains("pub const POLICY_FILTER: msr_filter_core::RawFilter<'static>"),
        "{run:?}"
    );
}

#[test]
fn pack_prints_exactly_what_the_emitters_produce() {
    // The emitters' output is compiled and run on the kernel in tests/emit_c.rs and
    // tests/emit_rust.rs; here the CLI must print that very output for a policy file.
    let path = example("selftest-deny.policy");
    let text = std::fs::read_to_string(&path).unwrap();
    let policy: msr_filter_core::Policy<64> = msr_filter_core::Policy::parse(&text).unwrap();
    let filter = policy.pack().unwrap().filter;
    let c = msrfilter(&["pack", &path, "--emit", "c"]);
    assert_eq!(c.status, 0, "{c:?}");
    assert_eq!(
        c.stdout,
        msr_filter_cli::emit::c_header(&filter, "selftest-deny", &text)
    );
    let rust = msrfilter(&["pack", &path, "--emit", "rust", "--name", "deny"]);
    assert_eq!(rust.status, 0, "{rust:?}");
    assert_eq!(
        rust.stdout,
        msr_filter_cli::emit::rust_consts(&filter, "deny", &text)
    );
    let json = msrfilter(&["pack", &path, "--emit", "json"]);
    assert_eq!(json.status, 0, "{json:?}");
    let printed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(printed, msr_filter_cli::json::to_json(&filter));
}

#[test]
fn pack_refuses_what_check_refuses() {
    let p = TempPolicy::new(
        "pack-x2apic",
        "default allow\n\ndeny rw 0x800-0x80f  # no\n",
    );
    for emit in ["json", "c", "rust"] {
        let run = msrfilter(&["pack", p.path(), "--emit", emit]);
        assert_eq!(run.status, 1, "{emit}: {run:?}");
        assert!(run.stdout.is_empty(), "{emit}: {run:?}");
        assert_eq!(run.stderr, msrfilter(&["check", p.path()]).stderr, "{emit}");
        assert!(
            run.stderr.starts_with(&format!("{}: rule 0 ", p.path())),
            "{run:?}"
        );
        assert!(run.stderr.contains("x2APIC"), "{run:?}");
    }
    let p = TempPolicy::new("pack-bad", "default deny\nallow x 0x10\n");
    let run = msrfilter(&["pack", p.path(), "--emit", "json"]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!("{}:2:7: ", p.path())),
        "{run:?}"
    );
    let run = msrfilter(&["pack", p.path()]);
    assert_eq!(run.status, 2, "--emit is required: {run:?}");
    let run = msrfilter(&["pack", p.path(), "--emit", "go"]);
    assert_eq!(run.status, 2, "{run:?}");
}

#[test]
fn check_raw_names_the_kernel_rule_a_filter_breaks() {
    let path = example("invalid.json");
    let run = msrfilter(&["check", "--raw", &path]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "{path}: the kernel would refuse this filter: KVM_X86_SET_MSR_FILTER fails with \
             EINVAL: range 1 has flags 0x4, with bits other than READ (1) and WRITE (2) (EINVAL)\n"
        ),
        "{run:?}"
    );

    let run = msrfilter(&["check", "--raw", &path, "--format", "json"]);
    assert_eq!(run.status, 1, "{run:?}");
    let report = json_of(&run);
    assert_eq!(report["accepted"], false, "{run:?}");
    assert_eq!(report["error"]["errno"], "EINVAL", "{run:?}");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("range 1 has flags 0x4"),
        "{run:?}"
    );
    assert!(report["filter"].is_null(), "{run:?}");
    assert_eq!(report["ranges"], 2, "{run:?}");

    // DEFAULT_DENY without ranges: valid JSON, but the kernel's EINVAL.
    let p =
        TempPolicy::with_extension("deny-empty", "json", r#"{"default": "deny", "ranges": []}"#);
    let run = msrfilter(&["check", "--raw", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("fails with EINVAL: a DEFAULT_DENY filter needs"),
        "{run:?}"
    );
}

#[test]
fn check_raw_bad_json_names_range_and_field() {
    let p = TempPolicy::with_extension(
        "short-bitmap",
        "json",
        r#"{"default": "allow", "ranges": [
            {"flags": ["read"], "base": "0x10", "nmsrs": 64, "bitmap": "ffffffffffffffff"},
            {"flags": ["write"], "base": "0x100", "nmsrs": 65, "bitmap": "ffffffffffffffff"}]}"#,
    );
    let run = msrfilter(&["check", "--raw", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "{}: range 1, field `bitmap`: 8 bytes, but for nmsrs 65 the kernel reads 16 \
             (ceil(nmsrs / 64) * 8)\n",
            p.path()
        ),
        "{run:?}"
    );
    // JSON output does not change that: no verdict on what is not a filter.
    let run = msrfilter(&["check", "--raw", p.path(), "--format", "json"]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("range 1, field `bitmap`"), "{run:?}");

    let p = TempPolicy::with_extension("not-json", "json", "{\"default\": ");
    let run = msrfilter(&["check", "--raw", p.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("{}: not valid JSON: ", p.path())),
        "{run:?}"
    );
    // A policy is not JSON.
    let run = msrfilter(&["check", "--raw", &example("demo.policy")]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stderr.contains(": not valid JSON: "), "{run:?}");
}

#[test]
fn check_raw_other_vmm_reports_lints_and_storms() {
    let path = example("other-vmm.json");
    let run = msrfilter(&["check", "--raw", &path]);
    assert_eq!(run.status, 0, "warnings do not fail: {run:?}");
    let out = &run.stdout;
    assert!(
        has_row(
            out,
            &[
                "0",
                "0xc0000100",
                "0xc0000102",
                "3",
                "rw",
                "8",
                "FS_BASE..KERNEL_GS_BASE"
            ]
        ),
        "{run:?}"
    );
    assert!(
        out.contains(
            "warning: range 1 covers x2APIC MSRs 0x800-0x83f, which the kernel never filters \
             (64 of them denied in vain)\n"
        ),
        "{run:?}"
    );
    assert!(
        out.contains("warning: FS_BASE 0xc0000100 is denied for reads and writes: "),
        "{run:?}"
    );
    assert!(
        out.contains("warning: GS_BASE 0xc0000101 is denied for reads and writes: "),
        "{run:?}"
    );
    assert!(
        !out.contains("KERNEL_GS_BASE 0xc0000102 is denied"),
        "{run:?}"
    );
    assert_eq!(out.lines().last(), Some("ok"), "{run:?}");

    let run = msrfilter(&["check", "--raw", &path, "--format", "json"]);
    assert_eq!(run.status, 0, "{run:?}");
    let report = json_of(&run);
    assert_eq!(report["accepted"], true, "{run:?}");
    assert!(report["error"].is_null(), "{run:?}");
    assert_eq!(report["ranges"], 3, "{run:?}");
    assert_eq!(report["bitmap_bytes"], 24, "{run:?}");
    assert_eq!(report["lints"].as_array().unwrap().len(), 1, "{run:?}");
    assert!(
        report["lints"][0].as_str().unwrap().contains("x2APIC"),
        "{run:?}"
    );
    let storms = report["exit_storms"].as_array().unwrap();
    assert_eq!(storms.len(), 2, "{run:?}");
    assert_eq!(storms[0]["msr"], "0xc0000100", "{run:?}");
    assert_eq!(storms[0]["name"], "FS_BASE", "{run:?}");
    assert_eq!(storms[0]["denied"], "rw", "{run:?}");
    assert!(report.get("proven_minimal").is_none(), "{run:?}");
}

#[test]
fn check_warns_of_exit_storms() {
    let p = TempPolicy::new(
        "storm",
        "default allow\ndeny r FS_BASE\ndeny rw 0x474f4f00\n",
    );
    let run = msrfilter(&["check", p.path()]);
    assert_eq!(run.status, 0, "a storm is a warning: {run:?}");
    let warnings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{run:?}");
    assert!(
        warnings[0].starts_with("warning: FS_BASE 0xc0000100 is denied for reads: KVM passes it"),
        "{run:?}"
    );
    assert_eq!(run.stdout.lines().last(), Some("ok"), "{run:?}");

    let run = msrfilter(&["check", p.path(), "--format", "json"]);
    assert_eq!(run.status, 0, "{run:?}");
    let report = json_of(&run);
    assert_eq!(report["accepted"], true, "{run:?}");
    assert_eq!(report["proven_minimal"], true, "{run:?}");
    assert_eq!(report["lints"], serde_json::json!([]), "{run:?}");
    let storms = report["exit_storms"].as_array().unwrap();
    assert_eq!(storms.len(), 1, "{run:?}");
    assert_eq!(storms[0]["name"], "FS_BASE", "{run:?}");
    assert_eq!(storms[0]["msr"], "0xc0000100", "{run:?}");
    assert_eq!(storms[0]["denied"], "r", "{run:?}");
    assert!(
        storms[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("FS_BASE 0xc0000100 is denied for reads"),
        "{run:?}"
    );

    // No storm, no warning.
    let run = msrfilter(&["check", &example("demo.policy")]);
    assert!(!run.stdout.contains("warning:"), "{run:?}");
}

#[test]
fn explain_raw_filter() {
    let path = example("other-vmm.json");
    let run = msrfilter(&["explain", "--raw", &path, "FS_BASE"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "rdmsr 0xc0000100 (FS_BASE): deny — slot 0 (rw 0xc0000100-0xc0000102) bit 0x0\n\
         wrmsr 0xc0000100 (FS_BASE): deny — slot 0 (rw 0xc0000100-0xc0000102) bit 0x0\n",
        "{run:?}"
    );
    let run = msrfilter(&["explain", "--raw", &path, "kernel_gs_base", "w"]);
    assert_eq!(
        run.stdout,
        "wrmsr 0xc0000102 (KERNEL_GS_BASE): allow — slot 0 (rw 0xc0000100-0xc0000102) bit 0x2\n",
        "{run:?}"
    );
    // The VMM's x2APIC range denies in vain.
    let run = msrfilter(&["explain", "--raw", &path, "0x830", "w"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("allow — x2APIC MSRs 0x800-0x8ff are never filtered by the kernel"),
        "{run:?}"
    );
    let run = msrfilter(&["explain", "--raw", &path, "0x10", "r"]);
    assert_eq!(
        run.stdout, "rdmsr 0x10 (IA32_TSC): allow — no range matches: default allow\n",
        "{run:?}"
    );
    // No policy lines for a raw filter.
    assert!(!run.stdout.contains("policy:"), "{run:?}");

    // A filter the kernel refuses cannot be explained.
    let run = msrfilter(&["explain", "--raw", &example("invalid.json"), "0x10"]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stderr.contains("EINVAL"), "{run:?}");
    assert!(run.stderr.contains("range 1"), "{run:?}");
}

#[test]
fn explain_format_json() {
    let p = TempPolicy::new("explain-json", GOOD);
    let run = msrfilter(&[
        "explain",
        p.path(),
        "IA32_SPEC_CTRL",
        "w",
        "--format",
        "json",
    ]);
    assert_eq!(run.status, 0, "{run:?}");
    let e = json_of(&run);
    assert!(e.is_object(), "one access, one object: {run:?}");
    assert_eq!(e["decision"], "deny", "{run:?}");
    assert_eq!(e["msr"], "0x48", "{run:?}");
    assert_eq!(e["name"], "IA32_SPEC_CTRL", "{run:?}");
    assert_eq!(e["access"], "write", "{run:?}");
    assert_eq!(e["decided_by"], "range", "{run:?}");
    assert_eq!(
        e["range"],
        serde_json::json!({"slot": 0, "bit": 0}),
        "{run:?}"
    );
    assert_eq!(
        e["policy"],
        serde_json::json!({"decision": "deny", "decided_by": "rule", "rule": 1,
                           "text": "deny w IA32_SPEC_CTRL", "line": 3}),
        "{run:?}"
    );

    // Both accesses: an array, reads first.
    let run = msrfilter(&["explain", p.path(), "spec_ctrl", "--format", "json"]);
    assert_eq!(run.status, 0, "{run:?}");
    let both = json_of(&run);
    let both = both.as_array().expect("an array for both accesses");
    assert_eq!(both.len(), 2, "{run:?}");
    assert_eq!(both[0]["access"], "read", "{run:?}");
    assert_eq!(both[0]["decision"], "allow", "{run:?}");
    assert_eq!(both[0]["decided_by"], "default", "{run:?}");
    assert_eq!(both[0]["policy"]["decided_by"], "default", "{run:?}");
    assert_eq!(both[0]["policy"]["text"], "default allow", "{run:?}");
    assert_eq!(both[0]["policy"]["line"], 1, "{run:?}");
    assert_eq!(both[1]["decision"], "deny", "{run:?}");

    let run = msrfilter(&["explain", p.path(), "0x802", "r", "--format", "json"]);
    let e = json_of(&run);
    assert_eq!(e["decided_by"], "x2apic", "{run:?}");
    assert_eq!(e["policy"]["decided_by"], "x2apic", "{run:?}");

    // A raw filter: the filter's decision only.
    let run = msrfilter(&[
        "explain",
        "--raw",
        &example("other-vmm.json"),
        "GS_BASE",
        "r",
        "--format",
        "json",
    ]);
    assert_eq!(run.status, 0, "{run:?}");
    let e = json_of(&run);
    assert_eq!(e["decision"], "deny", "{run:?}");
    assert_eq!(
        e["range"],
        serde_json::json!({"slot": 0, "bit": 1}),
        "{run:?}"
    );
    assert!(e.get("policy").is_none(), "{run:?}");
}

const DIFF_OLD: &str = "\
default allow
deny w IA32_SPEC_CTRL
deny r FS_BASE
";

const DIFF_NEW: &str = "\
default allow
deny r 0xc0000080-0xc0000084
deny w IA32_PRED_CMD
deny rw 0x40000000+0x100
";

#[test]
fn diff_lists_every_change_in_both_directions() {
    let old = TempPolicy::new("diff-old", DIFF_OLD);
    let new = TempPolicy::new("diff-new", DIFF_NEW);
    let run = msrfilter(&["diff", old.path(), new.path()]);
    assert_eq!(run.status, 1, "1 means changed: {run:?}");
    assert_eq!(
        run.stdout,
        "\
read  0x40000000-0x400000ff (256 MSRs, HV_X64_MSR_GUEST_OS_ID..): allow -> deny
read  0xc0000080-0xc0000084 (5 MSRs, EFER..SYSCALL_MASK): allow -> deny
read  0xc0000100 (FS_BASE): deny -> allow
write 0x48 (IA32_SPEC_CTRL): deny -> allow
write 0x49 (IA32_PRED_CMD): allow -> deny
write 0x40000000-0x400000ff (256 MSRs, HV_X64_MSR_GUEST_OS_ID..): allow -> deny
6 changes
",
        "{run:?}"
    );
    assert!(run.stderr.is_empty(), "{run:?}");

    // And back: every change reversed.
    let run = msrfilter(&["diff", new.path(), old.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("read  0xc0000100 (FS_BASE): allow -> deny\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("write 0x48 (IA32_SPEC_CTRL): allow -> deny\n"),
        "{run:?}"
    );
    assert!(run.stdout.ends_with("\n6 changes\n"), "{run:?}");

    // A default flip: everything but the rules and the x2APIC MSRs (never filtered).
    let run = msrfilter_with_stdin(&["diff", "-", old.path()], Some("default deny\n"));
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("read  0x0-0x7ff (2048 MSRs): deny -> allow\nread  0x900-"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("write 0x49-0x7ff (1975 MSRs, IA32_PRED_CMD..): deny -> allow\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("write 0x900-0xffffffff (4294964992 MSRs): deny -> allow\n"),
        "{run:?}"
    );
}

#[test]
fn diff_without_changes_exits_0() {
    let a = TempPolicy::new("diff-same-a", GOOD);
    let run = msrfilter(&["diff", a.path(), a.path()]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, "0 changes\n", "{run:?}");
    // Written differently, deciding the same.
    let b = TempPolicy::new(
        "diff-same-b",
        "default allow\ndeny r 0x10\ndeny w 0x10-0x11\ndeny r 0x11\nallow rw 0x12\n",
    );
    let c = TempPolicy::new("diff-same-c", "default allow\ndeny rw 0x10+2\n");
    let run = msrfilter(&["diff", b.path(), c.path()]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, "0 changes\n", "{run:?}");
}

#[test]
fn diff_bad_policy_exits_2() {
    let good = TempPolicy::new("diff-good", DIFF_OLD);
    let bad = TempPolicy::new("diff-bad", "default deny\nallow x 0x10\n");
    let run = msrfilter(&["diff", good.path(), bad.path()]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!("{}:2:7: ", bad.path())),
        "{run:?}"
    );
    let run = msrfilter(&["diff", bad.path(), good.path()]);
    assert_eq!(run.status, 2, "{run:?}");
    // One that parses but cannot be packed.
    let x2apic = TempPolicy::new("diff-x2apic", "default allow\ndeny rw 0x800\n");
    let run = msrfilter(&["diff", good.path(), x2apic.path()]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(run.stderr.contains("x2APIC"), "{run:?}");
    let run = msrfilter(&["diff", good.path(), "/nonexistent/msrfilter.policy"]);
    assert_eq!(run.status, 2, "{run:?}");
    let run = msrfilter(&["diff", "-", "-"]);
    assert_eq!(run.status, 2, "{run:?}");
    let run = msrfilter(&["diff", good.path()]);
    assert_eq!(run.status, 2, "usage: {run:?}");
}

#[test]
fn help_documents_the_new_commands() {
    for command in ["pack", "diff"] {
        let run = msrfilter(&[command, "--help"]);
        assert_eq!(run.status, 0, "{run:?}");
        for want in ["Exit status:", "  0  ", "  1  ", "  2  "] {
            assert!(run.stdout.contains(want), "{command} {want}: {run:?}");
        }
    }
    let run = msrfilter(&["diff", "--help"]);
    assert!(run.stdout.contains("1 means \"changed\""), "{run:?}");
    let run = msrfilter(&["check", "--help"]);
    for want in [
        "--raw",
        "--format",
        "EINVAL",
        "\"bitmap\": \"1f00000000000000\"",
    ] {
        assert!(run.stdout.contains(want), "{want}: {run:?}");
    }
    let run = msrfilter(&["explain", "--help"]);
    for want in ["--raw", "--format", "\"decision\""] {
        assert!(run.stdout.contains(want), "{want}: {run:?}");
    }
    let run = msrfilter(&["--help"]);
    assert!(run.stdout.contains("(diff)"), "{run:?}");
}

/// The tool keeps rules in a `Vec`: a policy of more rules than any fixed capacity is checked,
/// and a rule past the 256th is named with its own line.
#[test]
fn check_takes_policies_of_any_size() {
    let mut text = String::from("default allow\n");
    for i in 0..600u32 {
        text.push_str(&format!("deny w {:#x}\n", 0x4000_0000 + 2 * i));
    }
    let policy = TempPolicy::new("many-rules", &text);
    let run = msrfilter(&["check", policy.path()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("600 rules"), "{}", run.stdout);
    let run = msrfilter(&["explain", policy.path(), "0x400004ae", "w"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("rule 599: deny w 0x400004ae (line 601)"),
        "{}",
        run.stdout
    );
}

#[test]
fn demo_swap_replaces_the_policy_while_vcpus_run() {
    if !kvm_or_skip() {
        return;
    }
    let run = msrfilter(&["demo", "--swap"]);
    assert_eq!(run.status, 0, "{run:?}");
    let out = &run.stdout;
    assert!(out.contains("demo --swap ok"), "{run:?}");
    assert!(out.contains("200 replacements (generation 201)"), "{run:?}");
    // Every row: no mis-routed exit and no #GP (the last two columns).
    for msr in [
        "0x174 (IA32_SYSENTER_CS)",
        "0x175 (IA32_SYSENTER_ESP)",
        "0x4b564dff",
    ] {
        let row = out
            .lines()
            .find(|l| l.starts_with(msr))
            .unwrap_or_else(|| panic!("no row for {msr}: {run:?}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[cols.len() - 2..], ["0", "0"], "{row}");
    }
    let run = msrfilter(&["demo", "--swap", "--ignore-msrs"]);
    assert_eq!(
        run.status, 2,
        "--swap conflicts with --ignore-msrs: {run:?}"
    );
}

/// Runs `msrfilter ARGS` under `sh -c` with `redirect` appended (`>/dev/full`, `>&-`,
/// `| head -c 1`); returns msrfilter's exit status and its standard error.
fn msrfilter_redirected(args: &[&str], redirect: &str) -> (i32, String) {
    let script = format!(
        "\"$0\" {} {redirect}; echo \"status=$?\" >&2",
        args.join(" ")
    );
    let script = if redirect.starts_with('|') {
        // The status of msrfilter, not of the reader.
        format!(
            "{{ \"$0\" {} 2>&3; echo \"status=$?\" >&3; }} 3>&2 {redirect} >/dev/null",
            args.join(" ")
        )
    } else {
        script
    };
    let out = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_msrfilter")])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let status = stderr
        .lines()
        .find_map(|l| l.strip_prefix("status="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {stderr:?}"));
    (status, stderr)
}

/// Output that cannot be written is a failure naming standard output, never a panic; a reader
/// that stops early (a closed pipe) ends the command quietly.
#[test]
fn unwritable_output_fails_cleanly() {
    let policy = example("selftest-deny.policy");
    let (status, stderr) = msrfilter_redirected(&["check", &policy], ">/dev/full");
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("msrfilter: cannot write to standard output: No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (status, stderr) = msrfilter_redirected(&["pack", "--emit", "json", &policy], ">&-");
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("standard output"), "{stderr}");
    // A reader that closed its end before msrfilter writes: every write gets EPIPE.
    let (status, stderr) = msrfilter_redirected(
        &["pack", "--emit", "c", &policy],
        "| { exec 0<&-; sleep 1; }",
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Standard error that cannot be written: the failure status stays.
    let (status, _) = msrfilter_redirected(&["check", "/nonexistent"], "2>/dev/full");
    assert_eq!(status, 1);
    // And a plain redirection to /dev/null is a success.
    let (status, stderr) = msrfilter_redirected(&["check", &policy], ">/dev/null");
    assert_eq!(status, 0, "{stderr}");
}

/// Every input is read up to a limit: `/dev/zero` is refused with a clear error instead of
/// exhausting memory, for every command that reads one; `--max-input-bytes` moves the limit.
#[test]
fn input_is_bounded() {
    for args in [
        vec!["check", "/dev/zero"],
        vec!["check", "--raw", "/dev/zero"],
        vec!["explain", "/dev/zero", "0x10"],
        vec!["pack", "--emit", "json", "/dev/zero"],
        vec!["diff", "/dev/zero", "/dev/zero"],
        vec!["verify", "/dev/zero"],
        vec!["demo", "--policy", "/dev/zero"],
    ] {
        let run = msrfilter(&args);
        assert_ne!(run.status, 0, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(
                "/dev/zero is larger than the input limit of 4194304 bytes; raise it with --max-input-bytes"
            ),
            "{args:?}: {run:?}"
        );
    }
    let policy = "default allow\ndeny w 0x48\n";
    let run = msrfilter_with_stdin(&["check", "-", "--max-input-bytes", "10"], Some(policy));
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("<stdin> is larger than the input limit of 10 bytes"),
        "{run:?}"
    );
    let limit = policy.len().to_string();
    let run = msrfilter_with_stdin(&["check", "-", "--max-input-bytes", &limit], Some(policy));
    assert_eq!(run.status, 0, "exactly the limit is fine: {run:?}");
}

/// `from-kvm` prints an allow-list of this host's MSRs that is itself a policy file that packs
/// with no lint and no exit storm; with a profile, only the MSRs both list.
#[test]
fn from_kvm_allow_lists_with_and_without_a_profile() {
    if !kvm_or_skip() {
        return;
    }
    let run = msrfilter(&["from-kvm"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("\ndefault deny\n"), "{run:?}");
    let policy = msr_filter_core::Policy::<256>::parse(&run.stdout).unwrap();
    // The lists leave out MSRs KVM keeps elsewhere (EFER) or passes to the hardware (FS_BASE):
    // a guest needs them, so the allow-list has them.
    for msr in [0x10, 0xc000_0080, 0xc000_0100] {
        assert_eq!(
            policy.decide(msr, msr_filter_core::AccessType::Read),
            msr_filter_core::Action::Allow,
            "{msr:#x}: {run:?}"
        );
    }
    assert!(
        run.stdout.contains("# check: no lints, no exit storms"),
        "{run:?}"
    );
    let check = msrfilter_with_stdin(&["check", "-"], Some(&run.stdout));
    assert_eq!(
        check.status, 0,
        "the output is a policy that packs: {check:?}"
    );

    let profile = TempPolicy::with_extension(
        "profile",
        "txt",
        "IA32_TSC\n0xc0000080  # EFER\n0x12345678\n\nIA32_SYSENTER_CS\n",
    );
    let run = msrfilter(&["from-kvm", "--profile", profile.path()]);
    assert_eq!(run.status, 0, "{run:?}");
    let rules: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("allow"))
        .collect();
    assert_eq!(
        rules,
        [
            "allow rw 0x10  # IA32_TSC",
            "allow rw 0x174  # IA32_SYSENTER_CS",
            "allow rw 0xc0000080  # EFER"
        ],
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("# Not on this host, so left out (1): 0x12345678"),
        "{run:?}"
    );
    // The same profile as JSON.
    let json = TempPolicy::with_extension("profile", "json", r#"[16, "EFER", "IA32_SYSENTER_CS"]"#);
    let run2 = msrfilter(&["from-kvm", "--profile", json.path()]);
    assert_eq!(run2.status, 0, "{run2:?}");
    assert_eq!(
        run2.stdout
            .lines()
            .filter(|l| l.starts_with("allow"))
            .count(),
        3,
        "{run2:?}"
    );
    // A bad profile names its line.
    let bad = TempPolicy::with_extension("profile", "txt", "IA32_TSC\nNO_SUCH_MSR\n");
    let run = msrfilter(&["from-kvm", "--profile", bad.path()]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(":2: `NO_SUCH_MSR` is not a known MSR name"),
        "{run:?}"
    );
}
