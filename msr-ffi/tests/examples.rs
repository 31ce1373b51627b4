//! The C examples of the repository (`examples/c/`), built against the header and the static
//! library under the sanitizers and run on the real `/dev/kvm`. Skipped, saying so, without
//! `/dev/kvm` or outside the repository (the packaged crate has no `examples/c/`).

mod common;

use common::{build_static, manifest_dir, run, scratch};

fn example(name: &str, expect: &[&str]) {
    let dir = manifest_dir().join("../examples/c");
    if !dir.join(format!("{name}.c")).exists() {
        println!(
            "SKIPPED: {} not found (a packaged crate has no examples/c)",
            dir.display()
        );
        return;
    }
    if !msr_filter_kvm::guest::kvm_available() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let out_dir = scratch(&format!("example-{name}"));
    let exe = out_dir.join(name);
    build_static(&exe, &[&dir.join(format!("{name}.c"))], &["-pthread"]);
    let out = run(&exe, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in expect {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn minivmm_runs_two_vcpus_and_replaces_the_policy_while_they_run() {
    example(
        "minivmm",
        &[
            "vcpu 0: rdmsr CORE_THREAD_COUNT = 0x10002 (C callback)",
            "vcpu 1: wrmsr 0xabcd0010 = 0x2234, rdmsr back = 0x2234 (per-vCPU shadow)",
            "vcpu 1: rdmsr 0x474f4f00: #GP (denied by the policy, no handler: fails closed)",
            "replaced at the checkpoint: generation 2",
            "replaced again during phase 2: generation 3",
            "vcpu 0: after the replacement: CORE_THREAD_COUNT = 0x20004, 0x474f4f00 = 0x600d",
            "vcpu 1: 1006 MSR exits dispatched, 1 #GP",
            "CORE_THREAD_COUNT reads: 2 before the replacement, 2002 after",
            "minivmm: ok",
        ],
    );
}

#[test]
fn qemu_shape_uses_its_own_ioctls_and_exit_loop() {
    example(
        "qemu_shape",
        &[
            "filter set by the VMM's own ioctl",
            "wrmsr 0x606: #GP",
            "qemu_shape: ok",
        ],
    );
}
