//! Accesses and actions.

use core::fmt;

bitflags::bitflags! {
    /// Which accesses a range or rule covers: the kernel's range flags
    /// (`KVM_MSR_FILTER_READ` = 1, `KVM_MSR_FILTER_WRITE` = 2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Access: u32 {
        /// `rdmsr` (`KVM_MSR_FILTER_READ`).
        const READ = crate::abi::RANGE_READ;
        /// `wrmsr` (`KVM_MSR_FILTER_WRITE`).
        const WRITE = crate::abi::RANGE_WRITE;
    }
}

impl Access {
    /// Both reads and writes.
    pub const READ_WRITE: Access = Access::READ.union(Access::WRITE);

    /// The policy-text spelling: `r`, `w` or `rw` (`-` when empty).
    pub const fn as_str(self) -> &'static str {
        match self.bits() {
            1 => "r",
            2 => "w",
            3 => "rw",
            _ => "-",
        }
    }

    /// Whether this set names `access`.
    pub const fn includes(self, access: AccessType) -> bool {
        self.bits() & access.flag().bits() != 0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One guest access: the `type` argument of the kernel's `kvm_msr_allowed()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessType {
    /// `rdmsr`.
    Read,
    /// `wrmsr`.
    Write,
}

impl AccessType {
    /// Both access types, reads first.
    pub const ALL: [AccessType; 2] = [AccessType::Read, AccessType::Write];

    /// The range flag that covers this access.
    pub const fn flag(self) -> Access {
        match self {
            AccessType::Read => Access::READ,
            AccessType::Write => Access::WRITE,
        }
    }

    /// `read` or `write`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessType::Read => "read",
            AccessType::Write => "write",
        }
    }
}

impl fmt::Display for AccessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a filter does with an access: a bitmap bit of 1 allows, 0 denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The kernel handles the access as if there were no filter.
    Allow,
    /// The kernel exits to user space with reason FILTER (if enabled) or injects #GP.
    Deny,
}

impl Action {
    /// The bitmap bit for this action (1 = allow).
    pub const fn bit(self) -> u64 {
        match self {
            Action::Allow => 1,
            Action::Deny => 0,
        }
    }

    /// The action a bitmap bit stands for.
    pub const fn from_bit(bit: u64) -> Action {
        if bit & 1 == 1 {
            Action::Allow
        } else {
            Action::Deny
        }
    }

    /// The other action.
    pub const fn invert(self) -> Action {
        match self {
            Action::Allow => Action::Deny,
            Action::Deny => Action::Allow,
        }
    }

    /// `allow` or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// The filter flags for this default action (`KVM_MSR_FILTER_DEFAULT_ALLOW` / `_DENY`).
    pub const fn filter_flags(self) -> u32 {
        match self {
            Action::Allow => crate::abi::DEFAULT_ALLOW,
            Action::Deny => crate::abi::DEFAULT_DENY,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
