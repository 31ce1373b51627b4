//! The pkg-config file works as README.md's "Using it from C" installs it: a prefix with the
//! header, both libraries and `msr-filter.pc` made from `msr-filter.pc.in`; a C program built
//! with `pkg-config --cflags --libs msr-filter` runs, and `--static` adds the Rust runtime's
//! system libraries.

mod common;

use std::process::Command;

use common::{compile, lib_dir, manifest_dir, run, scratch, NATIVE_LIBS};

fn pkg_config(prefix: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("msr-filter")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config runs");
    assert!(
        out.status.success(),
        "pkg-config {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn installed_prefix_builds_with_pkg_config() {
    if Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: no pkg-config on PATH");
        return;
    }
    let prefix = scratch("pkg-config-prefix");
    std::fs::create_dir_all(prefix.join("include")).unwrap();
    std::fs::create_dir_all(prefix.join("lib/pkgconfig")).unwrap();
    std::fs::copy(
        manifest_dir().join("include/msr_filter.h"),
        prefix.join("include/msr_filter.h"),
    )
    .unwrap();
    for lib in ["libmsr_filter_ffi.a", "libmsr_filter_ffi.so"] {
        std::fs::copy(lib_dir().join(lib), prefix.join("lib").join(lib)).unwrap();
    }
    let pc = std::fs::read_to_string(manifest_dir().join("msr-filter.pc.in"))
        .unwrap()
        .replace("@PREFIX@", prefix.to_str().unwrap())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(prefix.join("lib/pkgconfig/msr-filter.pc"), pc).unwrap();

    assert_eq!(
        pkg_config(&prefix, &["--modversion"]),
        env!("CARGO_PKG_VERSION")
    );
    let static_libs = pkg_config(&prefix, &["--static", "--libs"]);
    for lib in NATIVE_LIBS {
        assert!(static_libs.contains(lib), "{static_libs}");
    }

    let flags = pkg_config(&prefix, &["--cflags", "--libs"]);
    let exe = prefix.join("test_policy");
    let src = manifest_dir().join("tests/c/test_policy.c");
    let rpath = format!("-Wl,-rpath,{}", prefix.join("lib").display());
    let mut args = vec![
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        src.to_str().unwrap(),
        "-o",
        exe.to_str().unwrap(),
        &rpath,
    ];
    args.extend(flags.split_whitespace());
    compile("gcc", &args);
    run(&exe, &[]);
}
