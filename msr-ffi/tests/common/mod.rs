//! Helpers shared by the tests that drive the C compiler.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The crate's directory (`msr-ffi/`).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("msr-ffi-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where cargo put the `libmsr_filter_ffi.a` and `.so` built for this test run: beside the test
/// executable (`target/<profile>/deps/`; `cargo test` does not copy them up to
/// `target/<profile>/`, where a `cargo build` may have left older ones).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .expect("test executable in target/<profile>/deps")
        .to_path_buf();
    for lib in ["libmsr_filter_ffi.a", "libmsr_filter_ffi.so"] {
        assert!(
            dir.join(lib).exists(),
            "{} not found beside the test executable: cargo builds it with the crate",
            dir.join(lib).display()
        );
    }
    dir
}

/// The native libraries a Rust static library needs on Linux (`rustc --print
/// native-static-libs`).
pub const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// Sanitizer flags for C tests: AddressSanitizer and UndefinedBehaviorSanitizer, any report
/// fatal.
pub const SANITIZE: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
];

/// Runs a compiler; panics with its output if it fails.
pub fn compile(compiler: &str, args: &[&str]) {
    let out = Command::new(compiler)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles C sources into an executable linked with the static library, under the sanitizers.
pub fn build_static(exe: &Path, sources: &[&Path], extra: &[&str]) {
    let include = manifest_dir().join("include");
    let lib = lib_dir().join("libmsr_filter_ffi.a");
    let mut args: Vec<String> = vec![
        "-std=c11".into(),
        "-Wall".into(),
        "-Wextra".into(),
        "-Werror".into(),
        "-pedantic".into(),
        "-I".into(),
        include.display().to_string(),
    ];
    args.extend(SANITIZE.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(sources.iter().map(|s| s.display().to_string()));
    args.push("-o".into());
    args.push(exe.display().to_string());
    args.push(lib.display().to_string());
    args.extend(NATIVE_LIBS.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    compile("gcc", &args);
}

/// Runs an executable with the sanitizers' options; panics with its output unless it exits 0.
pub fn run(exe: &Path, args: &[&str]) -> Output {
    let out = Command::new(exe)
        .args(args)
        .env(
            "ASAN_OPTIONS",
            "abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=99",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        exe.display(),
        out.status
    );
    print!("{stdout}");
    eprint!("{stderr}");
    out
}
