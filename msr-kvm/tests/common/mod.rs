//! Helpers shared by the real-kernel integration tests (each test file uses a subset).
#![allow(dead_code)]

use kvm_bindings::{kvm_enable_cap, kvm_msr_filter, KVM_CAP_X86_USER_SPACE_MSR};
use kvm_ioctls::{MsrExitReason, VcpuExit, VmFd};
use msr_filter_core::RawFilter;
use msr_filter_kvm::guest::{GuestResult, GuestVm, MsrAccess, MsrExitSeen, Outcome};

pub const TSC: u32 = 0x10;
pub const FLUSH_CMD: u32 = 0x10b;
pub const POWER_CTL: u32 = 0x1fc;
pub const XSS: u32 = 0xda0;
pub const SYSCALL_MASK: u32 = 0xc000_0084;
pub const FS_BASE: u32 = 0xc000_0100;
pub const GS_BASE: u32 = 0xc000_0101;
pub const TSC_AUX: u32 = 0xc000_0103;
pub const NON_EXISTENT: u32 = 0x474f_4f00;
pub const DEADBEEF: u32 = 0xdead_beef;
pub const X2APIC_TPR: u32 = 0x808;

pub fn rd(index: u32) -> MsrAccess {
    MsrAccess::Read { index }
}

pub fn wr(index: u32, value: u64) -> MsrAccess {
    MsrAccess::Write { index, value }
}

/// A completed read that returned `value`.
pub fn read_ok(value: u64) -> GuestResult {
    GuestResult::Completed { value: Some(value) }
}

/// A completed write.
pub const WRITE_OK: GuestResult = GuestResult::Completed { value: None };

/// The exit the harness records for `access` leaving with `reason`.
pub fn exit_seen(reason: MsrExitReason, access: MsrAccess) -> MsrExitSeen {
    match access {
        MsrAccess::Read { index } => MsrExitSeen {
            reason,
            index,
            is_write: false,
            data: 0,
        },
        MsrAccess::Write { index, value } => MsrExitSeen {
            reason,
            index,
            is_write: true,
            data: value,
        },
    }
}

/// An outcome with no MSR exit.
pub fn no_exit(result: GuestResult) -> Outcome {
    Outcome { exit: None, result }
}

/// An outcome after one exit of `reason` for `access`.
pub fn exited(reason: MsrExitReason, access: MsrAccess, result: GuestResult) -> Outcome {
    Outcome {
        exit: Some(exit_seen(reason, access)),
        result,
    }
}

/// Completes every MSR exit with `error = 1`: the guest gets #GP and no state changes.
pub fn fail_exit(exit: &mut VcpuExit<'_>) {
    match exit {
        VcpuExit::X86Rdmsr(e) => *e.error = 1,
        VcpuExit::X86Wrmsr(e) => *e.error = 1,
        _ => {}
    }
}

/// Runs `access`, completing any MSR exit with `error = 1`.
pub fn run_failing(g: &mut GuestVm, access: MsrAccess) -> Outcome {
    g.run(access, &mut fail_exit)
        .unwrap_or_else(|e| panic!("{access:?}: {e}"))
}

/// The harness VM's fd, shared, so that an `MsrInterception` can own it while the harness runs
/// the vCPU (`GuestVm::run` takes `&mut self`).
pub fn vm_handle(g: &GuestVm) -> std::sync::Arc<VmFd> {
    g.shared_vm()
}

/// `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)` with `reasons`, bypassing `MsrInterception`.
pub fn raw_enable_exits(vm: &VmFd, reasons: MsrExitReason) {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(reasons.bits());
    vm.enable_cap(&cap)
        .expect("enable KVM_CAP_X86_USER_SPACE_MSR");
}

/// Issues `KVM_X86_SET_MSR_FILTER` with `raw` as is; `Err(errno)` on failure.
///
/// # Safety
/// Every range of `raw` whose flags and `nmsrs` the kernel accepts (flags in 1..=3,
/// `0 < nmsrs <= 0x3000`) must point at `ceil(nmsrs / 64) * 8` bytes the process may read, or at
/// memory that faults (the kernel then fails with EFAULT).
pub unsafe fn raw_set_filter(vm: &VmFd, raw: &kvm_msr_filter) -> Result<(), i32> {
    // SAFETY: the caller upholds the bitmap contract above; the kernel only reads the bitmaps.
    unsafe { vm.set_msr_filter_unchecked(raw) }.map_err(|e| e.errno())
}

/// Two anonymous pages, the second PROT_NONE: a byte at the very end of the first page is
/// readable, the next one faults.
pub struct PageEnd {
    base: *mut u8,
    page: usize,
}

impl PageEnd {
    pub fn new() -> PageEnd {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        // SAFETY: a fresh private anonymous mapping with no address hint aliases nothing; the
        // result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        // SAFETY: `base + page` is the second page of the mapping just created.
        let rc =
            unsafe { libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE) };
        assert_eq!(rc, 0, "mprotect");
        PageEnd {
            base: base.cast(),
            page,
        }
    }

    /// The last `n` bytes of the readable page (zero-filled: all deny), `n <= page`.
    pub fn tail(&self, n: usize) -> &[u8] {
        assert!(n <= self.page);
        // SAFETY: the `n` bytes ending at `page` lie in the first, readable and zero-filled page
        // of the mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.add(self.page - n), n) }
    }

    /// The last byte of the readable page, as a one-byte slice.
    pub fn last_byte(&self) -> &[u8] {
        self.tail(1)
    }
}

impl Drop for PageEnd {
    fn drop(&mut self) {
        // SAFETY: `base` and `2 * page` describe the mapping created in `new`, unmapped only here.
        unsafe { libc::munmap(self.base.cast(), 2 * self.page) };
    }
}

/// xorshift64*: small, deterministic, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    /// Any seed, 0 included; distinct seeds give distinct streams (splitmix64 of the seed).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        self.below(den) < num
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }
}

/// Runs `access` as vCPU `vcpu`, `d` completing the exit; returns the outcome and what
/// `dispatch` said.
pub fn run_as(
    g: &mut GuestVm,
    d: &msr_filter_kvm::Dispatcher,
    vcpu: usize,
    access: MsrAccess,
) -> (Outcome, Option<msr_filter_kvm::Dispatch>) {
    let seen = std::cell::RefCell::new(None);
    let outcome = g
        .run(access, &mut |exit| {
            *seen.borrow_mut() = Some(d.dispatch(vcpu, exit));
        })
        .unwrap_or_else(|e| panic!("{access:x?}: {e}"));
    (outcome, seen.into_inner())
}

/// True (after printing the loud line the project promises) when there is no usable /dev/kvm:
/// the calling test returns and passes. With /dev/kvm present it returns false and the test runs.
pub fn skip_without_kvm() -> bool {
    if msr_filter_kvm::guest::kvm_available() {
        return false;
    }
    println!("SKIPPED: no /dev/kvm");
    true
}

/// `raw` laid out as `struct kvm_msr_filter`, unvalidated.
pub fn to_kvm_filter(raw: &RawFilter<'_>) -> kvm_msr_filter {
    *msr_filter_kvm::convert::KvmFilter::from_raw_unchecked(raw).as_raw()
}
