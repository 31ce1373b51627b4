//! `--emit c`: the generated header compiles with `-std=c11 -Wall -Wextra -Werror -pedantic` next
//! to `<linux/kvm.h>`, and a C program that enables exits and installs it on the real kernel sees
//! every decision the packed filter makes.

use std::path::PathBuf;
use std::process::Command;

use msr_filter_cli::emit::c_header;
use msr_filter_core::{AccessType, Action, Policy};

const POLICY: &str = "default allow
deny  rw 0x474f4f00            # a fabricated MSR
deny  w  IA32_SPEC_CTRL
deny  r  0xc0000080-0xc0000084
allow r  0xc0000082
deny  rw 0x40000000+0x100
";

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("msr-filter-kvm-emit-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn compile(dir: &std::path::Path) -> PathBuf {
    let policy: Policy<16> = Policy::parse(POLICY).unwrap();
    let filter = policy.pack().unwrap().filter;
    std::fs::write(
        dir.join("msrfilter_emitted.h"),
        c_header(&filter, "emitted", POLICY),
    )
    .unwrap();
    let exe = dir.join("emit_c_probe");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/emit_c_probe.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-D_DEFAULT_SOURCE",
        ])
        .arg("-I")
        .arg(dir)
        .arg(src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "the generated header does not compile cleanly:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn generated_header_compiles_and_installs_on_the_real_kernel() {
    let dir = scratch();
    let exe = compile(&dir);
    if !msr_filter_kvm::guest::kvm_available() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let policy: Policy<16> = Policy::parse(POLICY).unwrap();
    let filter = policy.pack().unwrap().filter;
    let mut probes = Vec::new();
    for index in [
        0x474f_4eff,
        0x474f_4f00,
        0x474f_4f01,
        0x48,
        0x47,
        0x49,
        0xc000_007f,
        0xc000_0080,
        0xc000_0082,
        0xc000_0084,
        0xc000_0085,
        0x3fff_ffff,
        0x4000_0000,
        0x4000_00ff,
        0x4000_0100,
    ] {
        for a in AccessType::ALL {
            let want = match filter.decide(index, a) {
                Action::Allow => "allow",
                Action::Deny => "deny",
            };
            let kind = if a == AccessType::Read { 'r' } else { 'w' };
            probes.push(format!("{kind}:{index:#x}:{want}"));
        }
    }
    let out = Command::new(&exe).args(&probes).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "C program disagrees with the packed filter:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} probes, all agree", probes.len())),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whatever a policy's comments hold (`/*`, `*/`, trigraphs such as `??/`, a line-ending
/// backslash, a NUL, an escape sequence), the generated header compiles cleanly.
#[test]
fn hostile_policy_comments_still_compile() {
    let policy_text = "default allow\n\
        deny w 0x48 # /* a nested comment opener\n\
        deny w 0x49 # ends */ early ??/\n\
        # ??= ??( ??) ??' ??< ??! ??> ??- and a backslash at the end \\\n\
        # a NUL \0 and an escape \u{1b}[2J and a bell \u{7}\n";
    let policy: Policy<16> = Policy::parse(policy_text).unwrap();
    let filter = policy.pack().unwrap().filter;
    // Not under `scratch()`: the other test removes that directory when it ends.
    let dir =
        std::env::temp_dir().join(format!("msr-filter-emit-c-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let header = c_header(&filter, "hostile", policy_text);
    assert!(!header.contains('\0') && !header.contains('\u{1b}'));
    std::fs::write(dir.join("msrfilter_hostile.h"), &header).unwrap();
    std::fs::write(
        dir.join("main.c"),
        "#include \"msrfilter_hostile.h\"\nint main(void)\n{\n    struct kvm_msr_filter f;\n    hostile_fill(&f);\n    return f.ranges[0].nmsrs == 0;\n}\n",
    )
    .unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-Wtrigraphs",
            "-Wcomment",
        ])
        .arg(dir.join("main.c"))
        .arg("-o")
        .arg(dir.join("main"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{header}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(dir.join("main")).status().unwrap();
    assert!(run.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
