//! Learning mode: find out which MSRs a guest really uses, then allow exactly those.
//!
//! A [`Learner`]'s filter denies every MSR (x2APIC aside, which the kernel never filters), so
//! every guest `rdmsr`/`wrmsr` exits; each vCPU thread completes its exits with its own
//! [`LearnerVcpu`], which forwards the access to KVM on that vCPU (`KVM_GET_MSRS` for a read,
//! `KVM_SET_MSRS` for a write) so the guest keeps running as if nothing were filtered, and
//! records the MSR, the access, the count and the first value. No lock on the exit path: each
//! vCPU records into its own [`LearnerVcpu`]; [`Learned::merge`] joins them (and several runs)
//! afterwards, and [`Learned::policy`] makes the allow-list.
//!
//! # Host-initiated is not guest-initiated
//! KVM relaxes some checks for accesses user space makes through `KVM_GET_MSRS`/`KVM_SET_MSRS`
//! (`host_initiated`): it lets user space read or write some MSRs a guest could not (MSRs the
//! guest's CPUID does not advertise, read-only MSRs being restored). Forwarding fails closed
//! where KVM tells: an MSR KVM does not know (the ioctl completes 0 entries) is a #GP for the
//! guest, as it would have been. What the relaxed checks let through is measured on the real
//! kernel by `tests/learn.rs` (`forwarding_matches_the_kernel_for_the_guests_own_accesses`) and
//! listed in the README.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use kvm_bindings::{kvm_msr_entry, kvm_msrs, Msrs, KVMIO};
use kvm_ioctls::{MsrExitReason, VcpuExit, VcpuFd};
use msr_filter_core::{
    abi, names, runs, Access, AccessType, Action, Filter, PackError, Packed, Policy, PolicyView,
    Rule,
};
use vmm_sys_util::ioctl::{ioctl_with_mut_ptr, ioctl_with_ptr};
use vmm_sys_util::{ioctl_iow_nr, ioctl_iowr_nr};

use crate::dispatch::{on_msr_exit, Dispatch};

/// The vCPU ioctls forwarding uses, on a duplicate of the vCPU fd (`kvm_ioctls::VcpuFd`'s own
/// methods need the `VcpuFd`, which the exit being completed borrows).
mod ioctls {
    #![allow(missing_docs)]
    use super::*;
    ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    ioctl_iow_nr!(KVM_SET_MSRS, KVMIO, 0x89, kvm_msrs);
}
use ioctls::{KVM_GET_MSRS, KVM_SET_MSRS};

/// The learning filter: every MSR denied, so every access exits.
#[derive(Clone, Debug)]
pub struct Learner {
    filter: Filter,
}

impl Default for Learner {
    fn default() -> Learner {
        Learner::new()
    }
}

impl Learner {
    /// A learner whose filter denies every MSR (`default deny`; x2APIC MSRs stay with KVM).
    pub fn new() -> Learner {
        let filter = Policy::<1>::new(Action::Deny)
            .pack()
            .expect("default deny packs")
            .filter;
        Learner { filter }
    }

    /// The filter to install (through [`MsrInterception`](crate::MsrInterception), which
    /// enables FILTER exits first).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// A recorder for one vCPU, forwarding to `vcpu` (it keeps a duplicate of the vCPU's fd,
    /// so it can complete exits while the exit borrows the `VcpuFd`); it lives on that vCPU's
    /// thread.
    pub fn vcpu(&self, vcpu: &VcpuFd) -> std::io::Result<LearnerVcpu> {
        // SAFETY: `vcpu` is borrowed for the call, so its fd is open and valid while we
        // duplicate it.
        self.vcpu_fd(unsafe { BorrowedFd::borrow_raw(vcpu.as_raw_fd()) })
    }

    /// A recorder for the vCPU whose fd is `vcpu` (from `KVM_CREATE_VCPU`), for hosts that
    /// keep vCPU fds of their own; the recorder keeps a duplicate.
    pub fn vcpu_fd(&self, vcpu: BorrowedFd<'_>) -> std::io::Result<LearnerVcpu> {
        Ok(LearnerVcpu {
            vcpu: vcpu.try_clone_to_owned()?,
            seen: BTreeMap::new(),
        })
    }
}

/// What was seen of one MSR and access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// How many guest accesses.
    pub count: u64,
    /// The value of the first one: read from KVM, or written by the guest.
    pub first_value: u64,
    /// How many of them KVM refused (the guest got #GP).
    pub faults: u64,
}

/// One vCPU's recorder: completes that vCPU's MSR exits by forwarding them to KVM, and records
/// them. Owned by the vCPU thread (`&mut self`): no lock.
#[derive(Debug)]
pub struct LearnerVcpu {
    /// A duplicate of the vCPU's fd, for `KVM_GET_MSRS`/`KVM_SET_MSRS`.
    vcpu: OwnedFd,
    seen: BTreeMap<(u32, AccessType), Observation>,
}

impl LearnerVcpu {
    /// Completes an MSR exit of this vCPU by forwarding it to KVM, and records it. Any other
    /// exit is left untouched.
    pub fn forward(&mut self, exit: &mut VcpuExit<'_>) -> Dispatch {
        on_msr_exit(exit, |access, reason, index, data, error| {
            self.forward_msr(access, reason, index, data, error)
        })
    }

    /// [`forward`](Self::forward) for an exit given in its parts. The exit is marked #GP before
    /// anything else, and stays so unless KVM completes the access. Every exit is forwarded
    /// alike, whatever its reason: KVM decides the access again, as if unfiltered.
    pub fn forward_msr(
        &mut self,
        access: AccessType,
        _reason: MsrExitReason,
        index: u32,
        data: &mut u64,
        error: &mut u8,
    ) -> Dispatch {
        *error = 1;
        let write = access == AccessType::Write;
        let entry = kvm_msr_entry {
            index,
            data: if write { *data } else { 0 },
            ..Default::default()
        };
        let ok = match Msrs::from_entries(&[entry]) {
            Ok(msrs) if write => {
                // SAFETY: `msrs` is a valid `kvm_msrs` with one entry (nmsrs = 1), alive for
                // the call; KVM_SET_MSRS only reads it. The fd is this vCPU's.
                let n =
                    unsafe { ioctl_with_ptr(&self.vcpu, KVM_SET_MSRS(), msrs.as_fam_struct_ptr()) };
                n == 1
            }
            Ok(mut msrs) => {
                // SAFETY: as above; KVM_GET_MSRS writes at most nmsrs = 1 entries into it.
                let n = unsafe {
                    ioctl_with_mut_ptr(&self.vcpu, KVM_GET_MSRS(), msrs.as_mut_fam_struct_ptr())
                };
                if n == 1 {
                    *data = msrs.as_slice()[0].data;
                }
                n == 1
            }
            Err(_) => false,
        };
        if ok {
            *error = 0;
        } else if !write {
            *data = 0;
        }
        let seen = self.seen.entry((index, access)).or_insert(Observation {
            count: 0,
            first_value: *data,
            faults: 0,
        });
        seen.count += 1;
        seen.faults += u64::from(!ok);
        Dispatch::Msr {
            index,
            write,
            fault: !ok,
        }
    }

    /// What this vCPU saw, by MSR then access (reads first).
    pub fn observations(&self) -> impl Iterator<Item = (u32, AccessType, Observation)> + '_ {
        self.seen.iter().map(|(&(i, a), &o)| (i, a, o))
    }
}

/// Observations of several vCPUs and runs, joined: the union of what each saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    seen: BTreeMap<(u32, AccessType), Observation>,
}

/// A learned allow-list: the policy, its text, and its packed filter.
#[derive(Clone, Debug)]
pub struct LearnedPolicy {
    /// The rules, `default deny` before them.
    pub rules: Vec<Rule>,
    /// The policy as text: each rule with its MSR's name and counts in a comment.
    pub text: String,
    /// The packed filter.
    pub packed: Packed,
}

impl Learned {
    /// Nothing yet.
    pub fn new() -> Learned {
        Learned::default()
    }

    /// Adds what one vCPU saw.
    pub fn merge(&mut self, vcpu: &LearnerVcpu) {
        for (index, access, o) in vcpu.observations() {
            self.add(index, access, o);
        }
    }

    /// Adds one observation (from another run, e.g. read back from a file).
    pub fn add(&mut self, index: u32, access: AccessType, o: Observation) {
        self.seen
            .entry((index, access))
            .and_modify(|s| {
                s.count += o.count;
                s.faults += o.faults;
            })
            .or_insert(o);
    }

    /// Every observation, by MSR then access.
    pub fn observations(&self) -> impl Iterator<Item = (u32, AccessType, Observation)> + '_ {
        self.seen.iter().map(|(&(i, a), &o)| (i, a, o))
    }

    /// The allow-list: `default deny`, then an allow rule per run of observed MSRs for each
    /// access that KVM completed at least once (an access KVM always refused stays denied: the
    /// guest got #GP for it under learning too).
    ///
    /// Packing bridges the gaps between nearby runs with denying bitmap bits, so the MSRs the
    /// guest never touched stay denied. Observations in more regions than 16 ranges can reach
    /// (regions over 0x3000 MSRs apart) cannot be an exact allow-list: the packer's
    /// `TooManyRanges` (with its proven bound) is returned rather than a policy that allows
    /// whole gaps, which would need more ranges, not fewer.
    pub fn policy(&self) -> Result<LearnedPolicy, PackError> {
        let allowed = |access: AccessType| -> Vec<u32> {
            self.seen
                .iter()
                .filter(|(&(i, a), o)| a == access && o.count > o.faults && !abi::is_x2apic(i))
                .map(|(&(i, _), _)| i)
                .collect()
        };
        let reads = allowed(AccessType::Read);
        let writes = allowed(AccessType::Write);
        let mut spans: Vec<(u32, u32, Access)> = Vec::new();
        for (list, access) in [(&reads, Access::READ), (&writes, Access::WRITE)] {
            spans.extend(runs(list).map(|(f, l)| (f, l, access)));
        }
        let rules = to_rules(&spans);
        let view = PolicyView::new(Action::Deny, &rules).expect("rules are well formed");
        let packed = crate::pack(view)?;
        let text = self.text(&rules);
        Ok(LearnedPolicy {
            rules,
            text,
            packed,
        })
    }

    fn text(&self, rules: &[Rule]) -> String {
        let mut text = String::from(
            "# Learned by msr-filter's learning mode: the MSRs the guest used.\ndefault deny\n",
        );
        for rule in rules {
            let _ = write!(text, "{rule}");
            let mut notes = Vec::new();
            if rule.first == rule.last {
                if let Some(name) = names::name_of(rule.first) {
                    notes.push(name.to_string());
                }
            }
            let count = |a: AccessType| -> u64 {
                self.seen
                    .range((rule.first, AccessType::Read)..=(rule.last, AccessType::Write))
                    .filter(|(&(_, acc), _)| acc == a && rule.access.includes(a))
                    .map(|(_, o)| o.count)
                    .sum()
            };
            let (r, w) = (count(AccessType::Read), count(AccessType::Write));
            if r > 0 {
                notes.push(format!("{r} reads"));
            }
            if w > 0 {
                notes.push(format!("{w} writes"));
            }
            if !notes.is_empty() {
                let _ = write!(text, "  # {}", notes.join(", "));
            }
            text.push('\n');
        }
        text
    }
}

/// Runs per access as rules; a run both reads and writes cover becomes one `rw` rule.
fn to_rules(spans: &[(u32, u32, Access)]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|&(f, l, a)| (f, l, a.bits()));
    for (first, last, access) in sorted {
        match rules.last_mut() {
            Some(r) if r.first == first && r.last == last => r.access |= access,
            _ => rules.push(Rule::new(first, last, access, Action::Allow)),
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(count: u64, faults: u64) -> Observation {
        Observation {
            count,
            first_value: 0,
            faults,
        }
    }

    #[test]
    fn the_policy_allows_what_kvm_completed_and_nothing_between() {
        let mut learned = Learned::new();
        // 200 MSRs spread over a few regions; one always refused.
        for k in 0..200u32 {
            learned.add(0x4000_0000 + 7 * k, AccessType::Read, seen(3, 0));
        }
        learned.add(0x4000_0001, AccessType::Read, seen(2, 2));
        learned.add(0x10, AccessType::Write, seen(1, 0));
        let policy = learned.policy().unwrap();
        let filter = &policy.packed.filter;
        assert!(filter.range_count() <= 2, "{filter:?}");
        for k in 0..200u32 {
            assert_eq!(
                filter.decide(0x4000_0000 + 7 * k, AccessType::Read),
                Action::Allow
            );
            assert_eq!(
                filter.decide(0x4000_0003 + 7 * k, AccessType::Read),
                Action::Deny
            );
        }
        assert_eq!(filter.decide(0x10, AccessType::Write), Action::Allow);
        assert_eq!(filter.decide(0x10, AccessType::Read), Action::Deny);
        assert_eq!(
            filter.decide(0x4000_0001, AccessType::Read),
            Action::Deny,
            "KVM refused every access: it stays denied"
        );
        // The text is the policy.
        let parsed: Policy<256> = Policy::parse(&policy.text).unwrap();
        assert_eq!(parsed.rules(), &policy.rules[..]);
        // More far-apart regions than 16 ranges reach: refused with the packer's bound.
        let mut spread = Learned::new();
        for k in 0..20u32 {
            spread.add(k * 0x10_0000, AccessType::Read, seen(1, 0));
        }
        assert!(matches!(
            spread.policy(),
            Err(PackError::TooManyRanges { .. })
        ));
    }

    #[test]
    fn runs_of_vcpus_merge_as_a_union() {
        let mut a = Learned::new();
        a.add(0x10, AccessType::Read, seen(1, 0));
        let mut b = Learned::new();
        b.add(0x10, AccessType::Read, seen(2, 0));
        b.add(0x11, AccessType::Write, seen(1, 0));
        for (i, acc, o) in b.observations().collect::<Vec<_>>() {
            a.add(i, acc, o);
        }
        let all: Vec<_> = a
            .observations()
            .map(|(i, acc, o)| (i, acc, o.count))
            .collect();
        assert_eq!(
            all,
            [(0x10, AccessType::Read, 3), (0x11, AccessType::Write, 1)]
        );
        let p = a.policy().unwrap();
        assert!(p.text.contains("allow r 0x10"), "{}", p.text);
        assert!(p.text.contains("allow w 0x11"), "{}", p.text);
    }
}
