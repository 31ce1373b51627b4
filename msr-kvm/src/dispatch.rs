//! Dispatching MSR exits to handlers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::sync::Arc;

use kvm_ioctls::{MsrExitReason, VcpuExit};

use crate::lookup::{Count, HandlerIndex, HandlerValues, ShardedCounters, Span};
use msr_filter_core::{
    abi, names, Access, AccessType, Action, Filter, PackError, PolicyError, PolicyView, Rule,
};

/// The exit being handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrContext {
    /// The vCPU that exited (the index the VMM gave [`Dispatcher::dispatch`]).
    pub vcpu: usize,
    /// The MSR.
    pub index: u32,
    /// Why the kernel exited: FILTER, UNKNOWN or INVAL.
    pub reason: MsrExitReason,
}

/// A handler's refusal: the guest gets #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// Emulates one or more MSRs in user space.
///
/// Handlers run on vCPU threads, concurrently: state that is per CPU in hardware must be kept
/// per vCPU (see [`handlers::Shadow`](crate::handlers::Shadow)). Returning `Err(Fault)` injects
/// #GP.
///
/// # Panics in handlers
/// The dispatcher catches a panic that unwinds out of a handler and treats it as `Err(Fault)`:
/// the guest gets #GP and the vCPU thread goes on. That needs unwinding. In a program built with
/// `panic = "abort"` (a common VMM setting) there is nothing to catch: a panicking handler
/// aborts the whole VMM process, and with it every guest. The exit is marked #GP before the
/// handler runs, but no guest survives to see it. Handlers that can fail should return
/// `Err(Fault)`, never panic.
pub trait MsrHandler: Send + Sync {
    /// `rdmsr`: the value the guest reads.
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault>;
    /// `wrmsr` of `value`.
    fn write(&self, ctx: &MsrContext, value: u64) -> Result<(), Fault>;
    /// A short name of the kind of handler, for statistics and logs.
    fn kind(&self) -> &'static str {
        "custom"
    }
}

impl<H: MsrHandler + ?Sized> MsrHandler for Arc<H> {
    fn read(&self, ctx: &MsrContext) -> Result<u64, Fault> {
        (**self).read(ctx)
    }
    fn write(&self, ctx: &MsrContext, value: u64) -> Result<(), Fault> {
        (**self).write(ctx, value)
    }
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
}

/// What to do with exits of reason UNKNOWN or INVAL (KVM allowed the access but could not
/// complete it), or with any exit no handler takes.
#[derive(Clone, Default)]
pub enum ExitRoute {
    /// Inject #GP (the default: fail closed).
    #[default]
    Gp,
    /// Reads return this value; writes are dropped.
    Value(u64),
    /// A handler decides.
    Handler(Arc<dyn MsrHandler>),
}

impl fmt::Debug for ExitRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitRoute::Gp => f.write_str("Gp"),
            ExitRoute::Value(v) => write!(f, "Value({v:#x})"),
            ExitRoute::Handler(_) => f.write_str("Handler(..)"),
        }
    }
}

/// Why a dispatcher cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A handler was registered for x2APIC MSRs, which the kernel never filters: no FILTER exit
    /// ever comes for them.
    X2apic {
        /// The handler's first MSR.
        first: u32,
        /// The handler's last MSR.
        last: u32,
    },
    /// Two handlers cover the same MSR and access.
    Overlap {
        /// The MSR.
        index: u32,
        /// The access.
        access: AccessType,
    },
    /// A handler with `first > last` or no access.
    BadRange {
        /// The handler's first MSR.
        first: u32,
        /// The handler's last MSR.
        last: u32,
    },
    /// A rule of the policy is malformed (it covers no access, or its first MSR is after its
    /// last).
    Policy(PolicyError),
    /// The policy plus the handlers' intercepts cannot be packed.
    Pack(PackError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::X2apic { first, last } => write!(
                f,
                "a handler for MSRs {first:#x}-{last:#x} covers x2APIC MSRs {:#x}-{:#x}, which the kernel never filters, so it would never see a FILTER exit (route their INVAL/UNKNOWN exits with on_inval/on_unknown instead)",
                abi::X2APIC_FIRST,
                abi::X2APIC_LAST
            ),
            BuildError::Overlap { index, access } => write!(
                f,
                "two handlers take {access}s of MSR {}",
                names::Label(*index)
            ),
            BuildError::BadRange { first, last } => write!(
                f,
                "a handler's range {first:#x}-{last:#x} is empty or names no access"
            ),
            BuildError::Policy(e) => write!(f, "{e}"),
            BuildError::Pack(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

struct Entry {
    first: u32,
    last: u32,
    access: Access,
    handler: Arc<dyn MsrHandler>,
}

/// vCPUs with counter blocks of their own unless [`DispatcherBuilder::vcpus`] says otherwise.
pub const DEFAULT_VCPUS: usize = 8;

/// Builds a [`Dispatcher`]: a policy, handlers, and routes for exits no handler takes.
pub struct DispatcherBuilder {
    default: Action,
    /// The policy's rules; `build` appends one deny rule per handler.
    rules: Vec<Rule>,
    entries: Vec<Entry>,
    /// Per access type (read, write): first MSR -> last MSR of the handlers taking it, to
    /// refuse overlaps as they are registered.
    taken: [BTreeMap<u32, u32>; 2],
    vcpus: usize,
    exit_counters: bool,
    unknown: ExitRoute,
    inval: ExitRoute,
    unhandled: ExitRoute,
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let handlers: Vec<_> = self
            .entries
            .iter()
            .map(|e| (MsrSpan(e.first, e.last), e.access, e.handler.kind()))
            .collect();
        f.debug_struct("DispatcherBuilder")
            .field("default", &self.default)
            .field("rules", &self.rules.len())
            .field("handlers", &handlers)
            .field("unknown", &self.unknown)
            .field("inval", &self.inval)
            .field("unhandled", &self.unhandled)
            .finish()
    }
}

impl DispatcherBuilder {
    /// Registers `handler` for `access` to the MSRs `msrs` (one index or an inclusive range).
    /// Registering **is** intercepting: the built filter denies those accesses so that every one
    /// of them exits to the handler.
    pub fn handle(
        mut self,
        msrs: impl Into<MsrSpan>,
        access: Access,
        handler: impl MsrHandler + 'static,
    ) -> Result<Self, BuildError> {
        let MsrSpan(first, last) = msrs.into();
        if first > last || access.is_empty() {
            return Err(BuildError::BadRange { first, last });
        }
        if first <= abi::X2APIC_LAST && last >= abi::X2APIC_FIRST {
            return Err(BuildError::X2apic { first, last });
        }
        for a in AccessType::ALL {
            if !access.includes(a) {
                continue;
            }
            let taken = &self.taken[a as usize];
            // The handler starting last at or before `last` is the only one that can overlap.
            if let Some((&f, &l)) = taken.range(..=last).next_back() {
                if l >= first {
                    return Err(BuildError::Overlap {
                        index: f.max(first),
                        access: a,
                    });
                }
            }
        }
        for a in AccessType::ALL {
            if access.includes(a) {
                self.taken[a as usize].insert(first, last);
            }
        }
        self.entries.push(Entry {
            first,
            last,
            access,
            handler: Arc::new(handler),
        });
        Ok(self)
    }

    /// How many vCPUs get exit counters of their own (default [`DEFAULT_VCPUS`]): vCPU indexes
    /// below this count their exits without an atomic add and without sharing a cache line, so
    /// vCPU threads do not slow each other down; higher indexes share one block of atomic
    /// counters. Costs about 24 bytes per handler per vCPU (whole 64-byte lines).
    pub fn vcpus(mut self, vcpus: usize) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// Whether to count each handler's exits (default: yes). The counts cost one memory write
    /// per handled exit (0.1 to 0.6 ns measured, see `BENCHMARKS.md`) and about 24 bytes per
    /// handler per vCPU; a VMM that keeps statistics of its own can turn them off, and then
    /// [`Dispatcher::handler_stats`] reports 0 reads, writes and faults. Exits no handler takes
    /// are counted either way ([`Dispatcher::route_stats`]), and the guest gets #GP for them
    /// either way: this changes what is recorded, never what the guest sees.
    ///
    /// ```
    /// use msr_filter_core::{Access, AccessType, Action, Policy};
    /// use msr_filter_kvm::{handlers::Constant, Dispatcher};
    /// use kvm_ioctls::MsrExitReason;
    ///
    /// let d = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
    ///     .handle(0x35, Access::READ, Constant::new(0x0001_0001))?
    ///     .exit_counters(false)
    ///     .build()?;
    /// let (mut data, mut error) = (0u64, 0u8);
    /// d.dispatch_msr(0, AccessType::Read, MsrExitReason::Filter, 0x35, &mut data, &mut error);
    /// assert_eq!((data, error), (0x0001_0001, 0));
    /// assert_eq!(d.handler_stats()[0].reads, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exit_counters(mut self, count: bool) -> Self {
        self.exit_counters = count;
        self
    }

    /// Routes exits of reason UNKNOWN (KVM does not know the MSR; needs that exit reason
    /// enabled) for MSRs no handler takes. Default: #GP.
    pub fn on_unknown(mut self, route: ExitRoute) -> Self {
        self.unknown = route;
        self
    }

    /// Routes exits of reason INVAL (KVM refused the value or access; needs that exit reason
    /// enabled) for MSRs no handler takes. Default: #GP.
    pub fn on_inval(mut self, route: ExitRoute) -> Self {
        self.inval = route;
        self
    }

    /// Routes FILTER exits no handler takes (the policy denies the MSR but nobody emulates
    /// it). Default: #GP, which is what the guest would get without user-space exits.
    pub fn on_unhandled(mut self, route: ExitRoute) -> Self {
        self.unhandled = route;
        self
    }

    /// The per-VM replacement for the host-wide `kvm.ignore_msrs=1`: MSRs KVM does not know
    /// read as 0 and writes to them are dropped (each one counted in
    /// [`Dispatcher::route_stats`]). Needs the UNKNOWN exit reason enabled.
    pub fn ignore_unknown_msrs(self) -> Self {
        self.on_unknown(ExitRoute::Value(0))
    }

    /// Packs the policy plus one deny rule per handler into the filter and builds the
    /// dispatcher.
    pub fn build(self) -> Result<Dispatcher, BuildError> {
        let mut rules = self.rules;
        rules.extend(
            self.entries
                .iter()
                .map(|e| Rule::new(e.first, e.last, e.access, Action::Deny)),
        );
        let policy = PolicyView::new(self.default, &rules).map_err(BuildError::Policy)?;
        let filter = pack_boxed(policy).map_err(BuildError::Pack)?;
        let mut entries = self.entries;
        entries.sort_by_key(|e| e.first);
        let index = AccessType::ALL.map(|a| {
            HandlerIndex::new(
                (0..entries.len())
                    .filter(|&k| entries[k].access.includes(a))
                    .map(|k| Span {
                        first: entries[k].first,
                        last: entries[k].last,
                        entry: k as u32,
                    })
                    .collect(),
            )
        });
        Ok(Dispatcher {
            filter,
            counters: self
                .exit_counters
                .then(|| ShardedCounters::new(entries.len(), self.vcpus)),
            handlers: HandlerValues::new(entries.iter().map(|e| Arc::clone(&e.handler))),
            entries,
            index,
            unknown: self.unknown,
            inval: self.inval,
            unhandled: self.unhandled,
            route_stats: RouteCounters::default(),
        })
    }
}

/// Packs `policy` and moves the filter to the heap at once: a `Filter` is tens of KiB, and
/// keeping it out of the caller's frame keeps [`DispatcherBuilder::build`]'s stack use down.
#[inline(never)]
fn pack_boxed(policy: PolicyView<'_>) -> Result<Box<Filter>, PackError> {
    crate::pack(policy).map(|packed| Box::new(packed.filter))
}

/// An MSR index or an inclusive range of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrSpan(pub u32, pub u32);

impl From<u32> for MsrSpan {
    fn from(index: u32) -> Self {
        MsrSpan(index, index)
    }
}

impl From<std::ops::RangeInclusive<u32>> for MsrSpan {
    fn from(r: std::ops::RangeInclusive<u32>) -> Self {
        MsrSpan(*r.start(), *r.end())
    }
}

/// Lock-free counters of exits that no handler took, per route.
#[derive(Default)]
struct RouteCounters {
    unknown: AtomicU64,
    inval: AtomicU64,
    unhandled: AtomicU64,
    faults: AtomicU64,
    /// The last time (in coarse ticks) a fallback exit was logged, for rate limiting.
    last_log: AtomicU64,
    per_msr: MsrCounters,
}

/// MSRs whose route exits are counted one by one; more distinct MSRs than this are counted in
/// [`RouteStats::untracked`].
const ROUTE_MSR_SLOTS: usize = 256;

/// Lock-free per-MSR counters of route exits: an open-addressing table whose slots are claimed
/// with a compare-and-swap and never released.
struct MsrCounters {
    /// 0: free; otherwise the MSR index + 1.
    keys: [AtomicU64; ROUTE_MSR_SLOTS],
    reads: [AtomicU64; ROUTE_MSR_SLOTS],
    writes: [AtomicU64; ROUTE_MSR_SLOTS],
    untracked: AtomicU64,
}

impl Default for MsrCounters {
    fn default() -> Self {
        MsrCounters {
            keys: [const { AtomicU64::new(0) }; ROUTE_MSR_SLOTS],
            reads: [const { AtomicU64::new(0) }; ROUTE_MSR_SLOTS],
            writes: [const { AtomicU64::new(0) }; ROUTE_MSR_SLOTS],
            untracked: AtomicU64::new(0),
        }
    }
}

impl MsrCounters {
    fn count(&self, index: u32, write: bool) {
        let key = u64::from(index) + 1;
        // Fibonacci hashing spreads clustered MSR indices over the table.
        let start = (u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
        for probe in 0..ROUTE_MSR_SLOTS {
            let slot = (start + probe) % ROUTE_MSR_SLOTS;
            let mut seen = self.keys[slot].load(Acquire);
            if seen == 0 {
                seen = match self.keys[slot].compare_exchange(0, key, AcqRel, Acquire) {
                    Ok(_) => key,
                    Err(actual) => actual,
                };
            }
            if seen == key {
                let counter = if write { &self.writes } else { &self.reads };
                counter[slot].fetch_add(1, Relaxed);
                return;
            }
        }
        self.untracked.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> Vec<RouteMsrStats> {
        let mut out: Vec<RouteMsrStats> = (0..ROUTE_MSR_SLOTS)
            .filter_map(|slot| {
                let key = self.keys[slot].load(Acquire);
                (key != 0).then(|| {
                    let index = (key - 1) as u32;
                    RouteMsrStats {
                        index,
                        name: names::name_of(index),
                        reads: self.reads[slot].load(Relaxed),
                        writes: self.writes[slot].load(Relaxed),
                    }
                })
            })
            .collect();
        out.sort_by_key(|s| s.index);
        out
    }
}

/// Route exits of one MSR (see [`Dispatcher::route_msr_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMsrStats {
    /// The MSR.
    pub index: u32,
    /// Its well-known name.
    pub name: Option<&'static str>,
    /// Read exits no handler took.
    pub reads: u64,
    /// Write exits no handler took.
    pub writes: u64,
}

/// A snapshot of the counters of exits no handler took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Exits with reason UNKNOWN.
    pub unknown: u64,
    /// Exits with reason INVAL.
    pub inval: u64,
    /// FILTER exits for MSRs no handler takes.
    pub unhandled: u64,
    /// Of all of them, how many ended in #GP.
    pub faults: u64,
    /// Of all of them, how many are missing from [`Dispatcher::route_msr_stats`] because more
    /// than 256 distinct MSRs took routes.
    pub untracked: u64,
}

/// A snapshot of one handler's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerStats {
    /// First MSR the handler takes.
    pub first: u32,
    /// Last MSR the handler takes.
    pub last: u32,
    /// Its well-known name, for a single named MSR.
    pub name: Option<&'static str>,
    /// The accesses it takes.
    pub access: Access,
    /// The handler's [`kind`](MsrHandler::kind).
    pub kind: &'static str,
    /// Read exits it handled.
    pub reads: u64,
    /// Write exits it handled.
    pub writes: u64,
    /// Of those, how many it refused (#GP).
    pub faults: u64,
}

/// What [`Dispatcher::dispatch`] did with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Not an MSR exit: the VMM handles it; the exit was not touched.
    NotMsr,
    /// An MSR exit, completed: `data`/`error` are set. Re-enter the vCPU.
    Msr {
        /// The MSR.
        index: u32,
        /// Whether it was a write.
        write: bool,
        /// Whether the guest gets #GP.
        fault: bool,
    },
}

/// Routes MSR exits to handlers; built by [`Dispatcher::builder`]. Share it between vCPU threads
/// (`Arc<Dispatcher>`): dispatch takes `&self`, no lock, and allocates nothing (an exit no
/// handler takes is logged with `log::warn!`, at most once a second).
pub struct Dispatcher {
    filter: Box<Filter>,
    /// Sorted by `first`.
    entries: Vec<Entry>,
    /// The entries' handlers, densely (the hot path reads only these).
    handlers: HandlerValues,
    /// Per access type (read, write): which entry takes an MSR.
    index: [HandlerIndex; 2],
    /// Per entry and vCPU: reads, writes, faults; `None` when not counted.
    counters: Option<ShardedCounters>,
    unknown: ExitRoute,
    inval: ExitRoute,
    unhandled: ExitRoute,
    route_stats: RouteCounters,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("filter", &self.filter)
            .field("handlers", &self.entries.len())
            .field("unknown", &self.unknown)
            .field("inval", &self.inval)
            .field("unhandled", &self.unhandled)
            .finish()
    }
}

impl Dispatcher {
    /// Starts from a policy: what the kernel should allow or deny before any handler is added.
    /// It takes a [`Policy`](msr_filter_core::Policy) of any capacity (`&policy`) or a
    /// [`PolicyView`] of rules kept anywhere, and copies the rules: there is no limit on their
    /// number but the kernel's 16 ranges.
    pub fn builder<'a>(policy: impl Into<PolicyView<'a>>) -> DispatcherBuilder {
        let policy = policy.into();
        DispatcherBuilder {
            default: policy.default_action(),
            rules: policy.rules().to_vec(),
            entries: Vec::new(),
            taken: [BTreeMap::new(), BTreeMap::new()],
            vcpus: DEFAULT_VCPUS,
            exit_counters: true,
            unknown: ExitRoute::Gp,
            inval: ExitRoute::Gp,
            unhandled: ExitRoute::Gp,
        }
    }

    /// The filter to install: the policy with every handled access denied, so that it exits.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether a handler (not a route) takes `access` to `index`.
    #[inline]
    pub(crate) fn has_handler(&self, index: u32, access: AccessType) -> bool {
        self.entry(index, access).is_some()
    }

    /// The exit reasons this dispatcher needs enabled: FILTER when its filter filters, UNKNOWN
    /// and INVAL when their route is not the default #GP (with the exit disabled, the kernel
    /// injects #GP itself).
    pub fn exit_reasons(&self) -> MsrExitReason {
        let mut reasons = MsrExitReason::empty();
        if !self.filter.is_unfiltered() {
            reasons |= MsrExitReason::Filter;
        }
        if !matches!(self.unknown, ExitRoute::Gp) {
            reasons |= MsrExitReason::Unknown;
        }
        if !matches!(self.inval, ExitRoute::Gp) {
            reasons |= MsrExitReason::Inval;
        }
        reasons
    }

    /// The position of the handler taking `access` to `index`.
    #[inline]
    fn entry(&self, index: u32, access: AccessType) -> Option<usize> {
        self.index[access as usize].get(index)
    }

    #[inline]
    fn route(&self, ctx: &MsrContext, write: Option<u64>) -> Result<u64, Fault> {
        let access = if write.is_some() {
            AccessType::Write
        } else {
            AccessType::Read
        };
        match self.entry(ctx.index, access) {
            Some(k) => {
                // Counted before the call: nothing of the count stays live across it.
                if let Some(counters) = &self.counters {
                    counters.add_exit(ctx.vcpu, k, write.is_some());
                }
                let result = call_handler(self.handlers.get(k), ctx, write);
                if result.is_err() {
                    if let Some(counters) = &self.counters {
                        counters.add_fault(ctx.vcpu, k);
                    }
                }
                result
            }
            None => self.route_unhandled(ctx, write),
        }
    }

    /// An exit no handler takes: its route, counted per route and per MSR, logged.
    #[cold]
    #[inline(never)]
    fn route_unhandled(&self, ctx: &MsrContext, write: Option<u64>) -> Result<u64, Fault> {
        let (route, counter) = if ctx.reason == MsrExitReason::Unknown {
            (&self.unknown, &self.route_stats.unknown)
        } else if ctx.reason == MsrExitReason::Inval {
            (&self.inval, &self.route_stats.inval)
        } else {
            (&self.unhandled, &self.route_stats.unhandled)
        };
        counter.fetch_add(1, Relaxed);
        self.route_stats.per_msr.count(ctx.index, write.is_some());
        let result = match route {
            ExitRoute::Gp => Err(Fault),
            ExitRoute::Value(v) => Ok(if write.is_some() { 0 } else { *v }),
            ExitRoute::Handler(h) => call_handler(&**h, ctx, write),
        };
        if result.is_err() {
            self.route_stats.faults.fetch_add(1, Relaxed);
        }
        self.log_fallback(ctx, write, result.is_ok());
        result
    }

    /// Logs an exit no handler took, at most once per second across the VM.
    fn log_fallback(&self, ctx: &MsrContext, write: Option<u64>, ok: bool) {
        let now = coarse_seconds();
        let last = self.route_stats.last_log.load(Relaxed);
        if now > last
            && self
                .route_stats
                .last_log
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            log::warn!(
                "vCPU {} {} MSR {} (exit reason {}), which no registered handler takes: {} (further such messages this second suppressed)",
                ctx.vcpu,
                if write.is_some() { "wrmsr" } else { "rdmsr" },
                names::Label(ctx.index),
                reason_name(ctx.reason),
                if ok { "completed by the configured route" } else { "#GP injected" },
            );
        }
    }

    /// Handles an MSR exit: calls the handler (or the configured route) and completes the exit
    /// (`data` for reads, `error = 1` for #GP). Any other exit is left untouched. The exit is
    /// marked #GP before anything runs and a panicking handler counts as a refusal, so no path
    /// leaves the kernel's fail-open preset in place.
    ///
    /// `vcpu` is the VMM's index of the exiting vCPU; handlers with per-vCPU state use it.
    #[inline]
    pub fn dispatch(&self, vcpu: usize, exit: &mut VcpuExit<'_>) -> Dispatch {
        on_msr_exit(exit, |access, reason, index, data, error| {
            self.dispatch_msr(vcpu, access, reason, index, data, error)
        })
    }

    /// Handles an MSR exit given in its parts, for VMMs with exit types of their own: the
    /// access (`KVM_EXIT_X86_RDMSR` is a read, `KVM_EXIT_X86_WRMSR` a write), the `reason`,
    /// `index`, `data` and `error` fields of `kvm_run`'s `msr` member. Completes it as
    /// [`dispatch`](Self::dispatch) does: `error` is set to 1 before anything runs, then to 0
    /// only when a handler or route succeeds; for a read, `data` is the value read.
    ///
    /// ```
    /// use kvm_ioctls::MsrExitReason;
    /// use msr_filter_core::{Access, AccessType, Action, Policy};
    /// use msr_filter_kvm::{handlers::Constant, Dispatch, Dispatcher};
    ///
    /// let d = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
    ///     .handle(0x35, Access::READ, Constant::new(0x0001_0001))?
    ///     .build()?;
    /// let (mut data, mut error) = (0u64, 0u8);
    /// let done = d.dispatch_msr(0, AccessType::Read, MsrExitReason::Filter, 0x35, &mut data, &mut error);
    /// assert_eq!((data, error), (0x0001_0001, 0));
    /// assert_eq!(done, Dispatch::Msr { index: 0x35, write: false, fault: false });
    /// // Nobody handles 0x36: the guest gets #GP.
    /// d.dispatch_msr(0, AccessType::Read, MsrExitReason::Filter, 0x36, &mut data, &mut error);
    /// assert_eq!(error, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn dispatch_msr(
        &self,
        vcpu: usize,
        access: AccessType,
        reason: MsrExitReason,
        index: u32,
        data: &mut u64,
        error: &mut u8,
    ) -> Dispatch {
        // Fail closed first: whatever happens below, the kernel's preset (error = 0, a
        // successful read of 0) never stands.
        *error = 1;
        let ctx = MsrContext {
            vcpu,
            index,
            reason,
        };
        let write = access == AccessType::Write;
        let result = if write {
            self.route(&ctx, Some(*data))
        } else {
            *data = 0;
            self.route(&ctx, None)
        };
        match result {
            Ok(v) => {
                if !write {
                    *data = v;
                }
                *error = 0;
            }
            Err(Fault) => *error = 1,
        }
        Dispatch::Msr {
            index,
            write,
            fault: result.is_err(),
        }
    }

    /// Per-handler exit counts, in MSR order.
    pub fn handler_stats(&self) -> Vec<HandlerStats> {
        self.entries
            .iter()
            .enumerate()
            .map(|(k, e)| HandlerStats {
                first: e.first,
                last: e.last,
                name: if e.first == e.last {
                    names::name_of(e.first)
                } else {
                    None
                },
                access: e.access,
                kind: e.handler.kind(),
                reads: self.count(k, Count::Read),
                writes: self.count(k, Count::Write),
                faults: self.count(k, Count::Fault),
            })
            .collect()
    }

    /// Entry `k`'s count of `what` over all vCPUs; 0 when exits are not counted.
    fn count(&self, k: usize, what: Count) -> u64 {
        self.counters.as_ref().map_or(0, |c| c.sum(k, what))
    }

    /// Counts of exits no handler took.
    pub fn route_stats(&self) -> RouteStats {
        RouteStats {
            unknown: self.route_stats.unknown.load(Relaxed),
            inval: self.route_stats.inval.load(Relaxed),
            unhandled: self.route_stats.unhandled.load(Relaxed),
            faults: self.route_stats.faults.load(Relaxed),
            untracked: self.route_stats.per_msr.untracked.load(Relaxed),
        }
    }

    /// Exits no handler took, per MSR, in MSR order (the first 256 distinct MSRs; see
    /// [`RouteStats::untracked`]). With [`DispatcherBuilder::ignore_unknown_msrs`], this is the
    /// list of unknown MSRs the guest touched.
    pub fn route_msr_stats(&self) -> Vec<RouteMsrStats> {
        self.route_stats.per_msr.snapshot()
    }
}

/// Calls `complete` with the parts of an MSR exit (the access, and `kvm_run`'s `reason`,
/// `index`, `data` and `error`; for a write, `data` is the value written), for every entry
/// point that takes a `VcpuExit`; any other exit is left untouched ([`Dispatch::NotMsr`]).
#[inline]
pub(crate) fn on_msr_exit(
    exit: &mut VcpuExit<'_>,
    complete: impl FnOnce(AccessType, MsrExitReason, u32, &mut u64, &mut u8) -> Dispatch,
) -> Dispatch {
    match exit {
        VcpuExit::X86Rdmsr(e) => complete(AccessType::Read, e.reason, e.index, e.data, e.error),
        VcpuExit::X86Wrmsr(e) => {
            complete(AccessType::Write, e.reason, e.index, &mut e.data, e.error)
        }
        _ => Dispatch::NotMsr,
    }
}

/// Calls a handler; a panicking handler is a refusal: the guest gets #GP, the vCPU thread goes
/// on.
#[inline]
fn call_handler(h: &dyn MsrHandler, ctx: &MsrContext, write: Option<u64>) -> Result<u64, Fault> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match write {
        Some(v) => h.write(ctx, v).map(|()| 0),
        None => h.read(ctx),
    }))
    .unwrap_or(Err(Fault))
}

/// The kernel's name of an exit reason: FILTER, UNKNOWN or INVAL.
pub fn reason_name(reason: MsrExitReason) -> &'static str {
    if reason == MsrExitReason::Filter {
        "FILTER"
    } else if reason == MsrExitReason::Unknown {
        "UNKNOWN"
    } else if reason == MsrExitReason::Inval {
        "INVAL"
    } else {
        "(unknown reason)"
    }
}

fn coarse_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::{ReadMsrExit, WriteMsrExit};
    use msr_filter_core::Policy;

    /// With and without exit counters the guest sees the same results; only the counts differ,
    /// for vCPUs with a block of their own and for those sharing the last one.
    #[test]
    fn exit_counters_change_the_counts_only() {
        use crate::handlers::{Constant, OnWrite, ReadOnly};
        let build = |count: bool| {
            Dispatcher::builder(&Policy::<1>::new(Action::Allow))
                .handle(
                    0x10,
                    Access::READ_WRITE,
                    ReadOnly::new(Constant::new(7), OnWrite::Gp),
                )
                .unwrap()
                .vcpus(2)
                .exit_counters(count)
                .build()
                .unwrap()
        };
        let (counted, uncounted) = (build(true), build(false));
        let steps = [
            (0, AccessType::Read, 0x10),
            (1, AccessType::Write, 0x10),
            (5, AccessType::Read, 0x10),
            (5, AccessType::Write, 0x10),
            (0, AccessType::Read, 0x11),
        ];
        for (vcpu, access, index) in steps {
            let run = |d: &Dispatcher| {
                let (mut data, mut error) = (0x55u64, 0u8);
                let done = d.dispatch_msr(
                    vcpu,
                    access,
                    MsrExitReason::Filter,
                    index,
                    &mut data,
                    &mut error,
                );
                (done, data, error)
            };
            assert_eq!(
                run(&counted),
                run(&uncounted),
                "vCPU {vcpu} {access} {index:#x}"
            );
        }
        let counts = |d: &Dispatcher| {
            let s = &d.handler_stats()[0];
            (s.reads, s.writes, s.faults)
        };
        assert_eq!(counts(&counted), (2, 2, 2));
        assert_eq!(counts(&uncounted), (0, 0, 0));
        assert_eq!(counted.route_stats().unhandled, 1);
        assert_eq!(uncounted.route_stats().unhandled, 1);
    }

    struct Panics;

    impl MsrHandler for Panics {
        fn read(&self, _: &MsrContext) -> Result<u64, Fault> {
            panic!("handler bug")
        }
        fn write(&self, _: &MsrContext, _: u64) -> Result<(), Fault> {
            panic!("handler bug")
        }
    }

    fn read(d: &Dispatcher, index: u32, reason: MsrExitReason) -> (Dispatch, u8, u64) {
        let (mut error, mut data) = (0u8, 0xdead_u64);
        let mut exit = VcpuExit::X86Rdmsr(ReadMsrExit {
            error: &mut error,
            reason,
            index,
            data: &mut data,
        });
        let out = d.dispatch(0, &mut exit);
        (out, error, data)
    }

    #[test]
    fn a_panicking_handler_is_a_gp_not_a_successful_access() {
        let d = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
            .handle(0x4b56_4dff, Access::READ_WRITE, Panics)
            .unwrap()
            .build()
            .unwrap();
        let (out, error, data) = read(&d, 0x4b56_4dff, MsrExitReason::Filter);
        assert_eq!(
            out,
            Dispatch::Msr {
                index: 0x4b56_4dff,
                write: false,
                fault: true
            }
        );
        assert_eq!((error, data), (1, 0));
        let mut error = 0u8;
        let mut exit = VcpuExit::X86Wrmsr(WriteMsrExit {
            error: &mut error,
            reason: MsrExitReason::Filter,
            index: 0x4b56_4dff,
            data: 1,
        });
        d.dispatch(0, &mut exit);
        assert_eq!(error, 1);
        assert_eq!(d.handler_stats()[0].faults, 2);
    }

    #[test]
    fn exits_nobody_takes_fail_closed_whatever_the_kernel_preset() {
        let d = Dispatcher::builder(&Policy::<1>::new(Action::Allow))
            .build()
            .unwrap();
        for reason in [
            MsrExitReason::Filter,
            MsrExitReason::Unknown,
            MsrExitReason::Inval,
        ] {
            let (_, error, data) = read(&d, 0x10, reason);
            assert_eq!((error, data), (1, 0), "{reason:?}");
        }
        assert_eq!(d.route_stats().faults, 3);
    }

    #[test]
    fn per_msr_route_counters_track_256_msrs_then_count_the_rest() {
        let c = MsrCounters::default();
        for i in 0..300u32 {
            c.count(0x4000_0000 + i, false);
            c.count(0x4000_0000 + i, i % 2 == 0);
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), ROUTE_MSR_SLOTS);
        assert!(snap.windows(2).all(|w| w[0].index < w[1].index));
        assert!(snap.iter().all(|s| s.reads + s.writes == 2));
        assert_eq!(
            c.untracked.load(Relaxed),
            2 * (300 - ROUTE_MSR_SLOTS as u64)
        );
    }

    #[test]
    fn per_msr_route_counters_agree_across_threads() {
        let c = std::sync::Arc::new(MsrCounters::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        c.count(i % 50, true);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), 50, "each MSR claims exactly one slot");
        assert!(snap.iter().all(|s| s.writes == 80 && s.reads == 0));
    }
}
