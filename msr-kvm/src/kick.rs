//! Kicking a vCPU thread out of `KVM_RUN`, so that it passes its quiescent point and a retired
//! handler table can be freed ([`LiveDispatcher::lagging_vcpus`](crate::LiveDispatcher::lagging_vcpus)
//! names the vCPUs to kick).
//!
//! A signal with a handler that does nothing interrupts `KVM_RUN`: the ioctl returns `EINTR`
//! and the VMM's loop calls `enter_run` before running again. A signal that arrives while the
//! thread is outside `KVM_RUN` does nothing; the thread passes its quiescent point anyway.
//!
//! ```no_run
//! use msr_filter_kvm::kick::VcpuKicker;
//!
//! let (tx, rx) = std::sync::mpsc::channel();
//! let vcpu_thread = std::thread::spawn(move || {
//!     // On the vCPU thread, before its run loop; pick a signal the VMM does not otherwise use.
//!     let (kicker, _guard) = VcpuKicker::for_current_thread(libc::SIGUSR2).unwrap();
//!     tx.send(kicker).unwrap();
//!     // loop { live.enter_run(v); match vcpu.run() { Err(e) if e.errno() == libc::EINTR => continue, ... } }
//! });
//! // Any thread: interrupts the vCPU's KVM_RUN; Ok(false) once the vCPU thread is gone.
//! let kicker = rx.recv().unwrap();
//! kicker.kick().unwrap();
//! vcpu_thread.join().unwrap();
//! ```

use std::collections::HashSet;
use std::ffi::c_int;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

/// Signals that already have the do-nothing handler.
static INSTALLED: Mutex<Option<HashSet<c_int>>> = Mutex::new(None);

extern "C" fn interrupt(_: c_int) {}

/// Installs the do-nothing handler for `signal`, once per process. Without `SA_RESTART`, so a
/// blocking ioctl returns `EINTR`.
fn install(signal: c_int) -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let installed = installed.get_or_insert_with(HashSet::new);
    if installed.contains(&signal) {
        return Ok(());
    }
    // SAFETY: a zeroed `sigaction` is a valid value (empty mask, no flags); the handler is an
    // `extern "C" fn(c_int)` that touches nothing, so it is async-signal-safe.
    let result = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = interrupt as extern "C" fn(c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    installed.insert(signal);
    Ok(())
}

/// Where a vCPU thread is, for kicking it: its thread id while it lives.
#[derive(Debug)]
struct Target {
    thread: libc::pthread_t,
    /// False once the thread dropped its [`KickGuard`].
    alive: bool,
}

/// Sends a signal to one vCPU thread to interrupt its `KVM_RUN`. Cheap to clone; `Send` and
/// `Sync`, for an updater thread.
#[derive(Clone, Debug)]
pub struct VcpuKicker {
    target: Arc<Mutex<Target>>,
    signal: c_int,
}

/// Held by the vCPU thread while it can be kicked; dropping it (on that thread, before the
/// thread ends) makes later kicks do nothing. Not `Send`: it belongs to its thread.
#[derive(Debug)]
pub struct KickGuard {
    target: Arc<Mutex<Target>>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for KickGuard {
    fn drop(&mut self) {
        self.target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .alive = false;
    }
}

impl VcpuKicker {
    /// Called on the vCPU thread: installs a do-nothing handler for `signal` (once per process;
    /// pick a signal the VMM does not use for anything else) and returns the kicker for this
    /// thread and the guard that keeps it valid.
    pub fn for_current_thread(signal: c_int) -> io::Result<(VcpuKicker, KickGuard)> {
        install(signal)?;
        // SAFETY: `pthread_self` has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        let target = Arc::new(Mutex::new(Target {
            thread,
            alive: true,
        }));
        Ok((
            VcpuKicker {
                target: Arc::clone(&target),
                signal,
            },
            KickGuard {
                target,
                _not_send: std::marker::PhantomData,
            },
        ))
    }

    /// Interrupts the thread's `KVM_RUN` (if it is in it). `Ok(false)` when the thread has
    /// dropped its guard: nothing is sent.
    pub fn kick(&self) -> io::Result<bool> {
        let target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
        if !target.alive {
            return Ok(false);
        }
        // SAFETY: the thread is alive: it drops its guard, which takes this lock, before it
        // ends, and we hold the lock, so its id is valid for the call.
        let err = unsafe { libc::pthread_kill(target.thread, self.signal) };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        Ok(true)
    }
}
