//! Built-in MSR handlers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::{Fault, MsrContext, MsrHandler};

/// Reads return a constant; writes get #GP.
#[derive(Clone, Copy, Debug)]
pub struct Constant {
    value: u64,
}

impl Constant {
    /// A handler reading `value`.
    pub fn new(value: u64) -> Self {
        Constant { value }
    }
}

impl MsrHandler for Constant {
    fn kind(&self) -> &'static str {
        "constant"
    }
    fn read(&self, _: &MsrContext) -> Result<u64, Fault> {
        Ok(self.value)
    }
    fn write(&self, _: &MsrContext, _: u64) -> Result<(), Fault> {
        Err(Fault)
    }
}

/// What a read-only handler does with writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnWrite {
    /// Inject #GP.
    Gp,
    /// Drop the write silently.
    Ignore,
}

/// Reads go to the inner handler; writes get #GP or are dropped.
#[derive(Debug)]
pub struct ReadOnly<H> {
    inner: H,
    on_write: OnWrite,
}

impl<H: MsrHandler> ReadOnly<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, on_write: OnWrite) -> Self {
        ReadOnly { inner, on_write }
    }
}

impl<H: MsrHandler> MsrHandler for ReadOnly<H> {
    fn kind(&self) -> &'static str {
        "read-only"
    }
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        self.inner.read(ctx)
    }
    fn write(&self, _: &MsrContext, _: u64) -> Result<(), Fault> {
        match self.on_write {
            OnWrite::Gp => Err(Fault),
            OnWrite::Ignore => Ok(()),
        }
    }
}

/// Writes are accepted and dropped; reads get #GP. For write-only command MSRs
/// (PRED_CMD, FLUSH_CMD) registered for writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteIgnore;

impl MsrHandler for WriteIgnore {
    fn kind(&self) -> &'static str {
        "write-ignore"
    }
    fn read(&self, _: &MsrContext) -> Result<u64, Fault> {
        Err(Fault)
    }
    fn write(&self, _: &MsrContext, _: u64) -> Result<(), Fault> {
        Ok(())
    }
}

/// A shadow register, one per vCPU (as the hardware register is per CPU): writes are stored,
/// reads return the last value this vCPU wrote (or the initial value). An exit from a vCPU index
/// beyond the count given gets #GP.
///
/// For snapshot and restore (live migration, a vCPU reset), register it as an `Arc<Shadow>` and
/// keep a clone: [`values`](Self::values) and [`set_value`](Self::set_value) read and set each
/// vCPU's register while the dispatcher runs.
///
/// ```
/// use std::sync::Arc;
/// use msr_filter_core::{Access, Action, Policy};
/// use msr_filter_kvm::{handlers::Shadow, Dispatcher};
///
/// let tsc_aux = Arc::new(Shadow::new(2, 0));
/// let d = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
///     .handle(0xc000_0103, Access::READ_WRITE, Arc::clone(&tsc_aux))?
///     .build()?;
/// let saved = tsc_aux.values();          // snapshot: one value per vCPU
/// tsc_aux.set_value(1, 7).unwrap();      // restore one
/// assert_eq!((saved, tsc_aux.value(1)), (vec![0, 0], Some(7)));
/// # drop(d);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Shadow {
    values: Box<[AtomicU64]>,
}

impl Shadow {
    /// A register for `vcpus` vCPUs, each starting at `initial`.
    pub fn new(vcpus: usize, initial: u64) -> Self {
        Shadow {
            values: (0..vcpus).map(|_| AtomicU64::new(initial)).collect(),
        }
    }

    /// The value vCPU `vcpu` would read; `None` past the vCPU count.
    pub fn value(&self, vcpu: usize) -> Option<u64> {
        self.values.get(vcpu).map(|v| v.load(Relaxed))
    }

    /// Sets vCPU `vcpu`'s register (restore); `None` past the vCPU count, nothing set.
    pub fn set_value(&self, vcpu: usize, value: u64) -> Option<()> {
        self.values.get(vcpu).map(|v| v.store(value, Relaxed))
    }

    /// Every vCPU's register, in vCPU order (snapshot).
    pub fn values(&self) -> Vec<u64> {
        self.values.iter().map(|v| v.load(Relaxed)).collect()
    }

    /// How many vCPUs the register has.
    pub fn vcpus(&self) -> usize {
        self.values.len()
    }
}

impl MsrHandler for Shadow {
    fn kind(&self) -> &'static str {
        "shadow"
    }
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        self.value(ctx.vcpu).ok_or(Fault)
    }
    fn write(&self, ctx: &MsrContext, value: u64) -> Result<(), Fault> {
        self.values
            .get(ctx.vcpu)
            .ok_or(Fault)?
            .store(value, Relaxed);
        Ok(())
    }
}

/// The host's value of the MSR, read from `/dev/cpu/N/msr` (the `msr` kernel module; needs
/// CAP_SYS_RAWIO). Read-only unless built with [`HostPassthrough::writable`]; a failed host
/// access gets #GP.
#[derive(Debug)]
pub struct HostPassthrough {
    file: File,
    writable: bool,
}

impl HostPassthrough {
    /// Reads from host CPU `cpu`.
    pub fn new(cpu: usize) -> io::Result<Self> {
        Self::open(format!("/dev/cpu/{cpu}/msr"), false)
    }

    /// Reads (and writes, if `writable`) through an MSR device file at `path`: an 8-byte value
    /// at offset `index`.
    pub fn open(path: impl AsRef<Path>, writable: bool) -> io::Result<Self> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open {} ({e}); host MSR passthrough needs the msr kernel module and CAP_SYS_RAWIO",
                        path.display()
                    ),
                )
            })?;
        Ok(HostPassthrough { file, writable })
    }

    /// Also passes writes through to the host (dangerous: the guest changes the host CPU).
    pub fn writable(cpu: usize) -> io::Result<Self> {
        Self::open(format!("/dev/cpu/{cpu}/msr"), true)
    }
}

impl MsrHandler for HostPassthrough {
    fn kind(&self) -> &'static str {
        "host-passthrough"
    }
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        let mut buf = [0u8; 8];
        self.file
            .read_exact_at(&mut buf, u64::from(ctx.index))
            .map_err(|_| Fault)?;
        Ok(u64::from_le_bytes(buf))
    }
    fn write(&self, ctx: &MsrContext, value: u64) -> Result<(), Fault> {
        if !self.writable {
            return Err(Fault);
        }
        self.file
            .write_all_at(&value.to_le_bytes(), u64::from(ctx.index))
            .map_err(|_| Fault)
    }
}

/// Counts the reads and writes reaching the inner handler.
#[derive(Debug)]
pub struct Counting<H> {
    inner: H,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl<H: MsrHandler> Counting<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Counting {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// (reads, writes) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.reads.load(Relaxed), self.writes.load(Relaxed))
    }
}

impl<H: MsrHandler> MsrHandler for Counting<H> {
    fn kind(&self) -> &'static str {
        "counting"
    }
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        self.reads.fetch_add(1, Relaxed);
        self.inner.read(ctx)
    }
    fn write(&self, ctx: &MsrContext, value: u64) -> Result<(), Fault> {
        self.writes.fetch_add(1, Relaxed);
        self.inner.write(ctx, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::MsrExitReason;

    fn ctx(vcpu: usize, index: u32) -> MsrContext {
        MsrContext {
            vcpu,
            index,
            reason: MsrExitReason::Filter,
        }
    }

    #[test]
    fn shadow_is_per_vcpu() {
        let s = Shadow::new(2, 7);
        s.write(&ctx(1, 0xc000_0103), 42).unwrap();
        assert_eq!(s.read(&ctx(0, 0xc000_0103)), Ok(7));
        assert_eq!(s.read(&ctx(1, 0xc000_0103)), Ok(42));
        assert_eq!(s.read(&ctx(2, 0xc000_0103)), Err(Fault));
    }

    #[test]
    fn read_only_constant_write_ignore_counting() {
        let c = Counting::new(ReadOnly::new(Constant::new(5), OnWrite::Ignore));
        assert_eq!(c.read(&ctx(0, 1)), Ok(5));
        assert_eq!(c.write(&ctx(0, 1), 9), Ok(()));
        assert_eq!(c.counts(), (1, 1));
        assert_eq!(
            ReadOnly::new(Constant::new(5), OnWrite::Gp).write(&ctx(0, 1), 9),
            Err(Fault)
        );
        assert_eq!(Constant::new(5).write(&ctx(0, 1), 5), Err(Fault));
        assert_eq!(WriteIgnore.write(&ctx(0, 0x49), 1), Ok(()));
        assert_eq!(WriteIgnore.read(&ctx(0, 0x49)), Err(Fault));
    }

    #[test]
    fn host_passthrough_reads_eight_bytes_at_the_index() {
        let dir = std::env::temp_dir().join(format!("msr-filter-kvm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("msr");
        let file = File::create(&path).unwrap();
        file.write_all_at(&0x1122_3344_5566_7788u64.to_le_bytes(), 0x10)
            .unwrap();
        let ro = HostPassthrough::open(&path, false).unwrap();
        assert_eq!(ro.read(&ctx(0, 0x10)), Ok(0x1122_3344_5566_7788));
        assert_eq!(
            ro.write(&ctx(0, 0x10), 1),
            Err(Fault),
            "read-only unless asked"
        );
        assert_eq!(ro.read(&ctx(0, 0x1000)), Err(Fault), "past the end: #GP");
        let rw = HostPassthrough::open(&path, true).unwrap();
        rw.write(&ctx(0, 0x20), 0xabcd).unwrap();
        assert_eq!(ro.read(&ctx(0, 0x20)), Ok(0xabcd));
        let err = HostPassthrough::open(dir.join("missing"), false).unwrap_err();
        assert!(err.to_string().contains("msr kernel module"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
