//! Exit storms: denying an MSR that KVM otherwise lets the guest access directly.
//!
//! KVM clears the VMX/SVM intercept for a few hot MSRs so that guest accesses never exit. A filter
//! that denies one of them makes KVM intercept it again (`KVM_REQ_MSR_FILTER_CHANGED`), and every
//! guest access then costs a full round trip to user space (7.7 µs per read on our nested
//! development machines, see BENCHMARKS.md; 1-2 µs on bare metal by public reports) instead of a
//! few nanoseconds. Guests touch some of them on every context
//! switch (FS/GS base, KERNEL_GS_BASE, SPEC_CTRL) or system call setup.

use crate::{Access, AccessType, Action, Filter};

/// One MSR that KVM can pass through to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Passthrough {
    /// The MSR.
    pub index: u32,
    /// The accesses KVM passes through.
    pub access: Access,
    /// When KVM passes it through.
    pub when: &'static str,
}

impl Passthrough {
    /// The MSR's name, from [`names`](crate::names).
    pub fn name(&self) -> &'static str {
        crate::names::name_of(self.index).unwrap_or("(unnamed MSR)")
    }
}

const fn pt(index: u32, access: Access, when: &'static str) -> Passthrough {
    Passthrough {
        index,
        access,
        when,
    }
}

const RW: Access = Access::READ_WRITE;
const R: Access = Access::READ;
const W: Access = Access::WRITE;

/// MSRs KVM (Linux 6.x) can pass straight to the hardware, from `vmx_possible_passthrough_msrs`
/// (VMX) and the SVM direct-access list, sorted by index.
pub static KVM_PASSTHROUGH: &[Passthrough] = &[
    pt(0x10, R, "VMX"),
    pt(0x48, RW, "once the guest writes it"),
    pt(0x49, W, "when the guest has IBPB"),
    pt(0xe7, R, "with APERF/MPERF in the guest"),
    pt(0xe8, R, "with APERF/MPERF in the guest"),
    pt(0x10b, W, "when the guest has L1D_FLUSH"),
    pt(0x174, RW, "always"),
    pt(0x175, RW, "always"),
    pt(0x176, RW, "always"),
    pt(0x1c4, RW, "VMX, with AMX"),
    pt(0x1c5, R, "VMX, with AMX"),
    pt(0x3fc, R, "VMX, with C-states in the guest"),
    pt(0x3fd, R, "VMX, with C-states in the guest"),
    pt(0x3fe, R, "VMX, with C-states in the guest"),
    pt(0x660, R, "VMX, with C-states in the guest"),
    pt(0xc000_0081, RW, "SVM"),
    pt(0xc000_0082, RW, "SVM"),
    pt(0xc000_0083, RW, "SVM"),
    pt(0xc000_0084, RW, "SVM"),
    pt(0xc000_0100, RW, "always (64-bit hosts)"),
    pt(0xc000_0101, RW, "always (64-bit hosts)"),
    pt(0xc000_0102, RW, "always (64-bit hosts)"),
    pt(0xc000_0103, RW, "SVM, with RDTSCP"),
];

/// An access a filter denies although KVM would pass it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStorm {
    /// The MSR KVM would pass through.
    pub msr: Passthrough,
    /// The accesses the filter denies.
    pub denied: Access,
}

impl core::fmt::Display for ExitStorm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} {:#x} is denied for {}: KVM passes it straight to the hardware ({}), but a deny makes every guest access exit to user space (microseconds instead of nanoseconds)",
            self.msr.name(),
            self.msr.index,
            match self.denied.bits() {
                1 => "reads",
                2 => "writes",
                _ => "reads and writes",
            },
            self.msr.when
        )
    }
}

/// The accesses `filter` denies that KVM would otherwise pass through: each one turns every
/// guest access into an exit to user space.
pub fn exit_storms(filter: &Filter) -> heapless::Vec<ExitStorm, 32> {
    let mut out = heapless::Vec::new();
    for msr in KVM_PASSTHROUGH {
        let mut denied = Access::empty();
        for access in AccessType::ALL {
            if msr.access.includes(access) && filter.decide(msr.index, access) == Action::Deny {
                denied |= access.flag();
            }
        }
        if !denied.is_empty() {
            let _ = out.push(ExitStorm { msr: *msr, denied });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    #[test]
    fn table_is_sorted_and_named_consistently() {
        for pair in KVM_PASSTHROUGH.windows(2) {
            assert!(pair[0].index < pair[1].index, "{:?}", pair);
        }
        for msr in KVM_PASSTHROUGH {
            assert!(
                crate::names::name_of(msr.index).is_some(),
                "{:#x} has no name",
                msr.index
            );
        }
    }

    #[test]
    fn denying_fs_base_reads_is_a_storm() {
        let policy: Policy<4> =
            Policy::parse("default allow\ndeny r FS_BASE\ndeny rw 0x474f4f00").unwrap();
        let storms = exit_storms(&policy.pack().unwrap().filter);
        assert_eq!(storms.len(), 1);
        assert_eq!(
            (storms[0].msr.index, storms[0].denied),
            (0xc000_0100, Access::READ)
        );
        assert!(std::format!("{}", storms[0]).starts_with("FS_BASE 0xc0000100 is denied for reads"));
        let default_deny: Policy<1> = Policy::parse("default deny").unwrap();
        assert_eq!(
            exit_storms(&default_deny.pack().unwrap().filter).len(),
            KVM_PASSTHROUGH.len()
        );
    }
}
