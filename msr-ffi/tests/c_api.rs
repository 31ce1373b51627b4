//! The C tests (`tests/c/test_*.c`), compiled against the generated header and the static
//! library under AddressSanitizer and UndefinedBehaviorSanitizer, and run; one of them also
//! linked against the shared library.

mod common;

use common::{build_static, compile, lib_dir, manifest_dir, run, scratch, NATIVE_LIBS};

fn c_test(name: &str) {
    let dir = scratch(name);
    let exe = dir.join(name);
    let src = manifest_dir().join(format!("tests/c/{name}.c"));
    build_static(&exe, &[&src], &["-pthread"]);
    let out = run(&exe, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{name}: ")) && stdout.contains("checks passed"),
        "{stdout}"
    );
}

#[test]
fn policies_and_filters() {
    c_test("test_policy");
}

#[test]
fn dispatch() {
    c_test("test_dispatch");
}

#[test]
fn vm() {
    c_test("test_vm");
}

#[test]
fn live_replacement() {
    c_test("test_live");
}

#[test]
fn learning_mode() {
    c_test("test_learn");
}

/// A negative control: the sanitizers report a leak of a library object and a read of
/// library-owned memory after its free (Rust code itself is not instrumented: ASan sees its
/// allocations, not its accesses).
#[test]
fn sanitizers_catch_misuse_of_library_objects() {
    let dir = scratch("canary");
    let exe = dir.join("canary");
    build_static(&exe, &[&manifest_dir().join("tests/c/canary.c")], &[]);
    for (mode, report) in [
        ("leak", "LeakSanitizer: detected memory leaks"),
        ("uaf", "AddressSanitizer: heap-use-after-free"),
    ] {
        let out = std::process::Command::new(&exe)
            .arg(mode)
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(report),
            "{mode}: {}\n{stderr}",
            out.status
        );
    }
}

#[test]
fn shared_library_links() {
    let dir = scratch("shared");
    let exe = dir.join("test_policy_shared");
    let lib = lib_dir();
    let include = manifest_dir().join("include");
    let src = manifest_dir().join("tests/c/test_policy.c");
    let mut args = vec![
        "-std=c11".to_string(),
        "-Wall".into(),
        "-Wextra".into(),
        "-Werror".into(),
        "-pedantic".into(),
        "-I".into(),
        include.display().to_string(),
        src.display().to_string(),
        "-o".into(),
        exe.display().to_string(),
        "-L".into(),
        lib.display().to_string(),
        format!("-Wl,-rpath,{}", lib.display()),
        "-lmsr_filter_ffi".into(),
    ];
    args.extend(NATIVE_LIBS.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    compile("gcc", &args);
    // Dynamically linked: the library is a NEEDED entry, not copied in.
    let ldd = std::process::Command::new("ldd")
        .arg(&exe)
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.contains("libmsr_filter_ffi.so"), "{ldd}");
    run(&exe, &[]);
}
