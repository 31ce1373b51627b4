//! The checked-in header is what cbindgen generates from the crate today, and it compiles: alone
//! as C11 and C++17 with every warning an error, and beside `<linux/kvm.h>` with static
//! assertions that the exported filter is `struct kvm_msr_filter`.
//!
//! `MSR_FILTER_BLESS=1 cargo test -p msr-filter-ffi --test header` rewrites the header.

mod common;

use std::path::Path;

use common::{compile, manifest_dir, scratch};

fn generate() -> Vec<u8> {
    let dir = manifest_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn checked_in_header_is_the_generated_one() {
    let path = manifest_dir().join("include/msr_filter.h");
    let fresh = generate();
    if std::env::var_os("MSR_FILTER_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} differs from what cbindgen generates from the crate; regenerate it with \
         MSR_FILTER_BLESS=1 cargo test -p msr-filter-ffi --test header",
        path.display()
    );
}

fn header_alone(name: &str, compiler: &str, std: &str, lang: &str) {
    let dir = scratch(name);
    let src = dir.join(if lang == "c" { "alone.c" } else { "alone.cpp" });
    std::fs::write(
        &src,
        "#include \"msr_filter.h\"\n#include \"msr_filter.h\"\nint main(void) { return MSR_FILTER_STATUS_OK; }\n",
    )
    .unwrap();
    let include = manifest_dir().join("include");
    compile(
        compiler,
        &[
            &format!("-std={std}"),
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-x",
            lang,
            "-c",
            "-I",
            include.to_str().unwrap(),
            src.to_str().unwrap(),
            "-o",
            dir.join("alone.o").to_str().unwrap(),
        ],
    );
}

#[test]
fn header_compiles_alone_as_c11() {
    header_alone("alone-c11", "gcc", "c11", "c");
}

#[test]
fn header_compiles_alone_as_cpp17() {
    header_alone("alone-cpp17", "g++", "c++17", "c++");
}

#[test]
fn exported_filter_is_layout_identical_to_struct_kvm_msr_filter() {
    if !Path::new("/usr/include/linux/kvm.h").exists() {
        println!("SKIPPED: no <linux/kvm.h> (install the kernel headers, linux-libc-dev)");
        return;
    }
    let dir = scratch("layout");
    let include = manifest_dir().join("include");
    let src = manifest_dir().join("tests/c/layout.c");
    for (compiler, std, lang) in [("gcc", "c11", "c"), ("g++", "c++17", "c++")] {
        compile(
            compiler,
            &[
                &format!("-std={std}"),
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-x",
                lang,
                "-c",
                "-I",
                include.to_str().unwrap(),
                src.to_str().unwrap(),
                "-o",
                dir.join(format!("layout-{lang}.o")).to_str().unwrap(),
            ],
        );
    }
}
