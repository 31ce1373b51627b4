//! A minimal guest harness: a one-vCPU, 16-bit real-mode VM on `/dev/kvm`
//! that performs exactly one `rdmsr` or `wrmsr` per call and reports what
//! happened, both at the KVM exit level and as the guest saw it.
//!
//! The harness never enables `KVM_CAP_X86_USER_SPACE_MSR` and never installs
//! an MSR filter: callers do that through [`GuestVm::vm`].
//!
//! Guest physical memory layout (one 64 KiB slot at address 0, filled with
//! `hlt` so a runaway guest stops instead of spinning):
//!
//! | address            | contents                                           |
//! |--------------------|----------------------------------------------------|
//! | `0x0000..0x0400`   | real-mode IVT, vector `v` -> `0000:HANDLERS+8*v`   |
//! | `0x1000`           | `rdmsr; hlt`                                       |
//! | `0x1010`           | `wrmsr; hlt`                                       |
//! | `0x1020`           | `rdmsr; dec si; jnz; hlt` for [`GuestVm::run_repeated`] |
//! | `0x1030`           | `wrmsr; dec si; jnz; hlt` for [`GuestVm::run_repeated`] |
//! | `0x2000..0x2800`   | per-vector stubs `mov al, v; out PORT, al; hlt`    |
//! | `0x8000`           | initial stack pointer (`ss` = 0)                   |
//!
//! Vector 13 (#GP) reports on [`GP_PORT`]; every other vector reports on
//! [`OTHER_VECTOR_PORT`] and surfaces as [`HarnessError::UnexpectedVector`].

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, MsrExitReason, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::errno;

const KVM_PATH: &str = "/dev/kvm";
const MEM_SIZE: usize = 0x1_0000;
const RDMSR_CODE: u16 = 0x1000;
const WRMSR_CODE: u16 = 0x1010;
const HANDLERS: u16 = 0x2000;
const HANDLER_STRIDE: u16 = 8;
const STACK_TOP: u64 = 0x8000;
const GP_VECTOR: u8 = 13;
/// Length of `rdmsr` / `wrmsr` (both `0f xx`): the `hlt` follows directly.
const MSR_INSN_LEN: u64 = 2;
/// Bound on KVM_RUN round trips per access; one access needs at most three.
const MAX_EXITS: usize = 16;
/// [`GuestVm::run_repeated`]'s loops: `rdmsr` (`0f 32`) or `wrmsr` (`0f 30`); `dec si`; `jnz`
/// back to the MSR instruction; `hlt`.
const RDMSR_LOOP: u16 = 0x1020;
const WRMSR_LOOP: u16 = 0x1030;
const LOOP_LEN: u64 = 6;
/// `jmp $`: a guest that stays in `KVM_RUN` until something interrupts it.
const SPIN_CODE: u16 = 0x1040;

fn loop_bytes(msr_insn: u8) -> [u8; LOOP_LEN as usize] {
    [0x0f, msr_insn, 0x4e, 0x75, 0xfb, 0xf4]
}

/// I/O port the #GP (vector 13) handler writes the vector number to.
pub const GP_PORT: u16 = 0x10;
/// I/O port every other exception handler writes its vector number to.
pub const OTHER_VECTOR_PORT: u16 = 0x11;

/// One MSR access for the guest to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrAccess {
    /// `rdmsr` with `ecx = index`.
    Read {
        /// MSR index.
        index: u32,
    },
    /// `wrmsr` with `ecx = index`, `edx:eax = value`.
    Write {
        /// MSR index.
        index: u32,
        /// Value written (high half in `edx`, low half in `eax`).
        value: u64,
    },
}

/// What the kernel reported when the access left the guest as a
/// `KVM_EXIT_X86_RDMSR` / `KVM_EXIT_X86_WRMSR` exit, captured before the
/// `on_exit` callback ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrExitSeen {
    /// Why the kernel exited (`UNKNOWN`, `INVAL` or `FILTER`).
    pub reason: MsrExitReason,
    /// MSR index of the access.
    pub index: u32,
    /// `true` for a `KVM_EXIT_X86_WRMSR` exit.
    pub is_write: bool,
    /// For writes, the value the guest wrote; for reads, the data the kernel
    /// preset in `kvm_run` (0 in practice).
    pub data: u64,
}

/// How the access ended, as the guest saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestResult {
    /// The instruction retired and the guest reached its `hlt`.
    Completed {
        /// `EDX:EAX` after `rdmsr`; `None` for writes.
        value: Option<u64>,
    },
    /// The instruction raised #GP in the guest.
    GeneralProtection,
}

/// Result of one [`GuestVm::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The MSR exit, if any (`None`: the kernel handled the access itself).
    pub exit: Option<MsrExitSeen>,
    /// What the guest observed.
    pub result: GuestResult,
}

/// Result of one [`GuestVm::run_repeated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatStats {
    /// `KVM_EXIT_X86_RDMSR` / `KVM_EXIT_X86_WRMSR` exits seen, each passed to `on_exit`
    /// (0: the kernel handled every access itself).
    pub msr_exits: u32,
    /// MSR instructions that retired: the count asked for, fewer if the guest took #GP.
    pub retired: u16,
    /// How the loop ended: `Completed` (with `EDX:EAX` after the last `rdmsr`; `None` for
    /// writes) or `GeneralProtection` from the first access that faulted.
    pub result: GuestResult,
}

/// Errors from building or running the guest.
#[derive(Debug)]
#[non_exhaustive]
pub enum HarnessError {
    /// `/dev/kvm` could not be opened read-write.
    NoKvm(io::Error),
    /// A KVM ioctl (or `mmap`) failed; `what` names the operation.
    Kvm {
        /// The failed operation.
        what: &'static str,
        /// The errno it returned.
        err: errno::Error,
    },
    /// The vCPU exited in a way the harness does not expect.
    UnexpectedExit(String),
    /// The guest took an exception other than #GP (the vector number).
    UnexpectedVector(u8),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKvm(e) => match e.kind() {
                io::ErrorKind::NotFound => write!(f, "{KVM_PATH} does not exist: {e}"),
                io::ErrorKind::PermissionDenied => {
                    write!(f, "no permission to open {KVM_PATH} read-write: {e}")
                }
                _ => write!(f, "cannot open {KVM_PATH}: {e}"),
            },
            Self::Kvm { what, err } => write!(f, "{what} failed: {err}"),
            Self::UnexpectedExit(s) => write!(f, "unexpected vCPU exit: {s}"),
            Self::UnexpectedVector(v) => write!(f, "guest took unexpected exception vector {v}"),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoKvm(e) => Some(e),
            Self::Kvm { err, .. } => Some(err),
            _ => None,
        }
    }
}

fn kvm_err(what: &'static str) -> impl FnOnce(errno::Error) -> HarnessError {
    move |err| HarnessError::Kvm { what, err }
}

/// Returns `true` if `/dev/kvm` can be opened read-write.
pub fn kvm_available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_PATH)
        .is_ok()
}

/// Anonymous host mapping backing guest physical memory; unmapped on drop.
struct GuestMem {
    ptr: NonNull<u8>,
    len: usize,
}

impl GuestMem {
    /// Maps `image.len()` bytes and copies `image` into them.
    fn new(image: &[u8]) -> Result<Self, HarnessError> {
        let len = image.len();
        // SAFETY: a fresh private anonymous mapping with no address hint; it
        // aliases no existing Rust memory. The result is checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(kvm_err("mmap guest memory")(errno::Error::last()));
        }
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| kvm_err("mmap guest memory")(errno::Error::new(libc::ENOMEM)))?;
        // SAFETY: `ptr` is a writable mapping of exactly `len` bytes that
        // nothing else references yet; `image` is a distinct heap buffer.
        unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), ptr.as_ptr(), len) };
        Ok(Self { ptr, len })
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping created in `new`, which is unmapped only
        // here. `GuestVm::drop` deleted the memory slot pointing at it first (or leaked this
        // value instead of dropping it), so no VM can reach it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Builds the guest memory image described in the module docs.
fn guest_image() -> Vec<u8> {
    let mut mem = vec![0xf4u8; MEM_SIZE]; // hlt everywhere
    for vector in 0..=255u8 {
        let handler = HANDLERS + HANDLER_STRIDE * u16::from(vector);
        let port = if vector == GP_VECTOR {
            GP_PORT
        } else {
            OTHER_VECTOR_PORT
        };
        let ivt = usize::from(vector) * 4;
        mem[ivt..ivt + 2].copy_from_slice(&handler.to_le_bytes()); // offset
        mem[ivt + 2..ivt + 4].copy_from_slice(&0u16.to_le_bytes()); // segment
        let h = usize::from(handler);
        // mov al, vector ; out imm8, al ; hlt
        mem[h..h + 5].copy_from_slice(&[0xb0, vector, 0xe6, port as u8, 0xf4]);
    }
    let rd = usize::from(RDMSR_CODE);
    mem[rd..rd + 3].copy_from_slice(&[0x0f, 0x32, 0xf4]); // rdmsr ; hlt
    let wr = usize::from(WRMSR_CODE);
    mem[wr..wr + 3].copy_from_slice(&[0x0f, 0x30, 0xf4]); // wrmsr ; hlt
    let spin = usize::from(SPIN_CODE);
    mem[spin..spin + 2].copy_from_slice(&[0xeb, 0xfe]); // jmp $
    for (at, insn) in [(RDMSR_LOOP, 0x32), (WRMSR_LOOP, 0x30)] {
        let at = usize::from(at);
        mem[at..at + LOOP_LEN as usize].copy_from_slice(&loop_bytes(insn));
    }
    mem
}

/// `EDX:EAX` as `rdmsr` leaves them.
fn edx_eax(regs: &kvm_regs) -> u64 {
    ((regs.rdx & 0xffff_ffff) << 32) | (regs.rax & 0xffff_ffff)
}

/// A one-vCPU real-mode VM that runs single MSR accesses.
///
/// After any `Err` from [`GuestVm::run`] the vCPU may hold half-completed
/// state; drop the `GuestVm` rather than reusing it.
pub struct GuestVm {
    // Field order is drop order: vCPU and VM go before the memory they use. The VM may live on
    // in other holders of `shared_vm`, so `Drop` deletes the memory slot before `mem` unmaps.
    vcpu: GuestVcpu,
    vm: Arc<VmFd>,
    kvm: Kvm,
    /// vCPUs created so far (the next one's id).
    vcpus: u32,
    /// `None` only while dropping, when a failed slot deletion leaks the mapping.
    mem: Option<GuestMem>,
}

impl fmt::Debug for GuestVm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestVm")
            .field("vm_fd", &self.vm.as_raw_fd())
            .field("vcpu_fd", &self.vcpu.vcpu.as_raw_fd())
            .field("vcpus", &self.vcpus)
            .field("guest_memory_bytes", &self.mem.as_ref().map(|m| m.len))
            .finish()
    }
}

impl Drop for GuestVm {
    /// Deletes memory slot 0 before the mapping behind it is unmapped: a holder of
    /// [`shared_vm`](Self::shared_vm) keeps the VM alive and may create and run vCPUs, which
    /// must then find no memory rather than host memory reused by someone else.
    fn drop(&mut self) {
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 0,
            userspace_addr: mem.ptr.as_ptr() as u64,
        };
        // SAFETY: a region of size 0 deletes slot 0; it names no host memory.
        if unsafe { self.vm.set_user_memory_region(region) }.is_err() {
            // The VM may still reach the mapping: leak it rather than unmap it under the guest.
            std::mem::forget(self.mem.take());
        }
    }
}

impl GuestVm {
    /// Opens `/dev/kvm`, creates a VM with 64 KiB of real-mode guest memory
    /// at physical address 0 and one vCPU in real mode.
    pub fn new() -> Result<Self, HarnessError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(KVM_PATH)
            .map_err(HarnessError::NoKvm)?;
        // SAFETY: the fd was just opened on /dev/kvm and ownership moves into
        // the `Kvm`, which closes it on drop.
        let kvm = unsafe { Kvm::from_raw_fd(file.into_raw_fd()) };
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let mem = GuestMem::new(&guest_image())?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.len as u64,
            userspace_addr: mem.ptr.as_ptr() as u64,
        };
        // SAFETY: the region covers exactly the live mapping owned by `mem`, which is stored in
        // the returned `GuestVm`; its `Drop` deletes this slot before `mem` unmaps (or leaks
        // the mapping if it cannot), so no holder of the VM fd can reach unmapped memory.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = GuestVcpu::new(&vm, 0)?;

        Ok(Self {
            vcpu,
            vm: Arc::new(vm),
            kvm,
            vcpus: 1,
            mem: Some(mem),
        })
    }

    /// Creates another vCPU in the same VM, in real mode over the same guest memory and code,
    /// with a stack of its own, to run on another thread (a [`GuestVcpu`] is `Send`). At most 8
    /// vCPUs in all.
    pub fn add_vcpu(&mut self) -> Result<GuestVcpu, HarnessError> {
        if self.vcpus >= MAX_VCPUS {
            return Err(HarnessError::UnexpectedExit(format!(
                "the harness has room for {MAX_VCPUS} vCPUs"
            )));
        }
        let vcpu = GuestVcpu::new(&self.vm, self.vcpus)?;
        self.vcpus += 1;
        Ok(vcpu)
    }

    /// vCPU 0, the one [`run`](Self::run) uses.
    pub fn vcpu(&mut self) -> &mut GuestVcpu {
        &mut self.vcpu
    }

    /// The `/dev/kvm` handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM fd, for enabling `KVM_CAP_X86_USER_SPACE_MSR` or installing an
    /// MSR filter before calling [`GuestVm::run`].
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// The VM fd, shared: hand it to an owner that outlives borrows, such as
    /// [`MsrInterception`](crate::MsrInterception), while this harness keeps running accesses.
    pub fn shared_vm(&self) -> Arc<VmFd> {
        Arc::clone(&self.vm)
    }

    /// Runs one access on vCPU 0: see [`GuestVcpu::run`].
    pub fn run(
        &mut self,
        access: MsrAccess,
        on_exit: &mut dyn FnMut(&mut VcpuExit<'_>),
    ) -> Result<Outcome, HarnessError> {
        self.vcpu.run(access, on_exit)
    }

    /// Runs `count` accesses in one guest loop on vCPU 0: see [`GuestVcpu::run_repeated`].
    pub fn run_repeated(
        &mut self,
        access: MsrAccess,
        count: u16,
        on_exit: &mut dyn FnMut(&mut VcpuExit<'_>),
    ) -> Result<RepeatStats, HarnessError> {
        self.vcpu.run_repeated(access, count, on_exit)
    }

    /// [`run`](Self::run) leaving exits as the kernel preset them: see [`GuestVcpu::run_raw`].
    pub fn run_raw(&mut self, access: MsrAccess) -> Result<Outcome, HarnessError> {
        self.vcpu.run_raw(access)
    }
}

/// The most vCPUs a [`GuestVm`] creates (each gets a 1 KiB stack below `0x8000`).
const MAX_VCPUS: u32 = 8;

/// One real-mode vCPU of a [`GuestVm`]: runs MSR accesses. vCPU 0 belongs to the `GuestVm`;
/// [`GuestVm::add_vcpu`] makes more, which may run on other threads.
///
/// After any `Err` from a run the vCPU may hold half-completed state; drop it.
pub struct GuestVcpu {
    vcpu: VcpuFd,
    stack_top: u64,
}

impl fmt::Debug for GuestVcpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestVcpu")
            .field("vcpu_fd", &self.vcpu.as_raw_fd())
            .field("stack_top", &self.stack_top)
            .finish()
    }
}

impl GuestVcpu {
    /// The vCPU's fd, e.g. for a [`LearnerVcpu`](crate::learn::LearnerVcpu).
    pub fn fd(&self) -> &VcpuFd {
        &self.vcpu
    }

    /// vCPU `id` of `vm`, in real mode with flat 64 KiB segments and its own stack.
    fn new(vm: &VmFd, id: u32) -> Result<GuestVcpu, HarnessError> {
        let vcpu = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        for seg in [
            &mut sregs.cs,
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
            &mut sregs.ss,
        ] {
            seg.base = 0;
            seg.selector = 0;
            seg.limit = 0xffff;
        }
        sregs.cr0 &= !1; // real mode (already the reset state)
        vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        Ok(GuestVcpu {
            vcpu,
            stack_top: STACK_TOP - 0x400 * u64::from(id),
        })
    }

    /// Runs one access. Each `KVM_EXIT_X86_RDMSR` / `KVM_EXIT_X86_WRMSR`
    /// exit is recorded, then passed to `on_exit` (which may set `data` /
    /// `error`, e.g. a dispatcher), then the vCPU resumes.
    pub fn run(
        &mut self,
        access: MsrAccess,
        on_exit: &mut dyn FnMut(&mut VcpuExit<'_>),
    ) -> Result<Outcome, HarnessError> {
        let (code, is_read) = match access {
            MsrAccess::Read { .. } => (RDMSR_CODE, true),
            MsrAccess::Write { .. } => (WRMSR_CODE, false),
        };
        self.enter(code, access, 0)?;

        let mut seen: Option<MsrExitSeen> = None;
        for _ in 0..MAX_EXITS {
            let mut exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(kvm_err("KVM_RUN")(e)),
            };
            let this = match &exit {
                VcpuExit::X86Rdmsr(e) => MsrExitSeen {
                    reason: e.reason,
                    index: e.index,
                    is_write: false,
                    data: *e.data,
                },
                VcpuExit::X86Wrmsr(e) => MsrExitSeen {
                    reason: e.reason,
                    index: e.index,
                    is_write: true,
                    data: e.data,
                },
                VcpuExit::IoOut(GP_PORT, [GP_VECTOR]) => {
                    return Ok(Outcome {
                        exit: seen,
                        result: GuestResult::GeneralProtection,
                    });
                }
                VcpuExit::IoOut(OTHER_VECTOR_PORT, [vector]) => {
                    return Err(HarnessError::UnexpectedVector(*vector));
                }
                VcpuExit::Hlt => return self.finish_hlt(code, is_read, seen),
                other => return Err(HarnessError::UnexpectedExit(format!("{other:?}"))),
            };
            if let Some(first) = seen {
                return Err(HarnessError::UnexpectedExit(format!(
                    "second MSR exit {this:?} after {first:?}"
                )));
            }
            seen = Some(this);
            on_exit(&mut exit);
        }
        Err(HarnessError::UnexpectedExit(format!(
            "no completion after {MAX_EXITS} exits"
        )))
    }

    /// Runs `count` identical accesses in one guest loop (`rdmsr` or `wrmsr`;
    /// `dec si`; `jnz`; `hlt`, with `si = count`), entering the guest once
    /// instead of once per access: the tool for measuring what an access
    /// costs. Each `KVM_EXIT_X86_RDMSR` / `KVM_EXIT_X86_WRMSR` exit is counted
    /// and passed to `on_exit` (which may set `data` / `error`), then the vCPU
    /// resumes; the loop stops at the first #GP.
    ///
    /// `count == 0` runs nothing and reports no access. An MSR exit for another
    /// MSR or direction, or more exits than accesses, is
    /// [`HarnessError::UnexpectedExit`]; as with [`GuestVm::run`], drop the
    /// `GuestVm` after any `Err`.
    pub fn run_repeated(
        &mut self,
        access: MsrAccess,
        count: u16,
        on_exit: &mut dyn FnMut(&mut VcpuExit<'_>),
    ) -> Result<RepeatStats, HarnessError> {
        let (code, index, is_read) = match access {
            MsrAccess::Read { index } => (RDMSR_LOOP, index, true),
            MsrAccess::Write { index, .. } => (WRMSR_LOOP, index, false),
        };
        if count == 0 {
            return Ok(RepeatStats {
                msr_exits: 0,
                retired: 0,
                result: GuestResult::Completed { value: None },
            });
        }
        self.enter(code, access, count)?;

        let mut msr_exits: u32 = 0;
        // Every access exits at most once; the slack absorbs EINTR/EAGAIN and
        // the final hlt or #GP report.
        let max_runs = u32::from(count) * 2 + MAX_EXITS as u32;
        for _ in 0..max_runs {
            let mut exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(kvm_err("KVM_RUN")(e)),
            };
            let (exit_index, exit_is_write) = match &exit {
                VcpuExit::X86Rdmsr(e) => (e.index, false),
                VcpuExit::X86Wrmsr(e) => (e.index, true),
                VcpuExit::IoOut(GP_PORT, [GP_VECTOR]) => {
                    return self.finish_repeated(code, count, is_read, msr_exits, true);
                }
                VcpuExit::IoOut(OTHER_VECTOR_PORT, [vector]) => {
                    return Err(HarnessError::UnexpectedVector(*vector));
                }
                VcpuExit::Hlt => {
                    return self.finish_repeated(code, count, is_read, msr_exits, false);
                }
                other => return Err(HarnessError::UnexpectedExit(format!("{other:?}"))),
            };
            if exit_index != index || exit_is_write == is_read {
                return Err(HarnessError::UnexpectedExit(format!(
                    "MSR exit for {} of {exit_index:#x} while looping over {access:x?}",
                    if exit_is_write { "wrmsr" } else { "rdmsr" }
                )));
            }
            msr_exits += 1;
            if msr_exits > u32::from(count) {
                return Err(HarnessError::UnexpectedExit(format!(
                    "{msr_exits} MSR exits for {count} accesses"
                )));
            }
            on_exit(&mut exit);
        }
        Err(HarnessError::UnexpectedExit(format!(
            "no completion after {max_runs} exits"
        )))
    }

    /// Interprets the end of [`GuestVm::run_repeated`]'s loop: a `hlt` must be
    /// the one after the loop with `si` at 0; on #GP, `si` still counts the
    /// faulting access.
    fn finish_repeated(
        &self,
        code: u16,
        count: u16,
        is_read: bool,
        msr_exits: u32,
        general_protection: bool,
    ) -> Result<RepeatStats, HarnessError> {
        let regs = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        let left = (regs.rsi & 0xffff) as u16;
        let result = if general_protection {
            GuestResult::GeneralProtection
        } else {
            // rip points past the 1-byte hlt that ends the loop.
            let expected = u64::from(code) + LOOP_LEN;
            if regs.rip != expected || left != 0 {
                return Err(HarnessError::UnexpectedExit(format!(
                    "hlt at rip {:#x} with si {left}, expected rip {expected:#x} with si 0",
                    regs.rip
                )));
            }
            GuestResult::Completed {
                value: is_read.then(|| edx_eax(&regs)),
            }
        };
        Ok(RepeatStats {
            msr_exits,
            retired: count.saturating_sub(left),
            result,
        })
    }

    /// Points the vCPU at the code at `rip` with `ecx` = the MSR, `edx:eax` = the value written
    /// and `si` = the loop count.
    fn enter(&mut self, rip: u16, access: MsrAccess, count: u16) -> Result<(), HarnessError> {
        let (index, value) = match access {
            MsrAccess::Read { index } => (index, 0),
            MsrAccess::Write { index, value } => (index, value),
        };
        let mut regs = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        regs.rip = u64::from(rip);
        regs.rcx = u64::from(index);
        regs.rsi = u64::from(count);
        regs.rax = value & 0xffff_ffff;
        regs.rdx = value >> 32;
        regs.rsp = self.stack_top;
        regs.rflags = 2;
        self.vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
    }

    /// Runs a guest that spins (`jmp $`) inside `KVM_RUN` until a signal interrupts the ioctl
    /// (`EINTR`, e.g. from [`VcpuKicker::kick`](crate::kick::VcpuKicker::kick)), then returns:
    /// a vCPU "halted" in `KVM_RUN`, for testing what waits on it.
    pub fn run_until_interrupted(&mut self) -> Result<(), HarnessError> {
        self.enter(SPIN_CODE, MsrAccess::Read { index: 0 }, 0)?;
        match self.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(kvm_err("KVM_RUN")(e)),
            Ok(other) => Err(HarnessError::UnexpectedExit(format!("{other:?}"))),
        }
    }

    /// Convenience: [`GuestVm::run`] with an `on_exit` that leaves the exit
    /// as the kernel preset it (`error = 0`, read `data = 0`: the kernel's
    /// fail-open default).
    pub fn run_raw(&mut self, access: MsrAccess) -> Result<Outcome, HarnessError> {
        self.run(access, &mut |_| {})
    }

    /// Interprets a `hlt` exit: it must be the `hlt` right after the MSR
    /// instruction, otherwise the guest went somewhere unexpected.
    fn finish_hlt(
        &self,
        code: u16,
        is_read: bool,
        seen: Option<MsrExitSeen>,
    ) -> Result<Outcome, HarnessError> {
        let regs = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        // rip points past the 1-byte hlt.
        let expected = u64::from(code) + MSR_INSN_LEN + 1;
        if regs.rip != expected {
            return Err(HarnessError::UnexpectedExit(format!(
                "hlt at rip {:#x}, expected {expected:#x}",
                regs.rip
            )));
        }
        let value = is_read.then(|| edx_eax(&regs));
        Ok(Outcome {
            exit: seen,
            result: GuestResult::Completed { value },
        })
    }
}
