//! The small value types shared by every part of the C ABI, and their checked conversions from
//! the `uint32_t` values C passes in.

use msr_filter_core::{Access, AccessType, Action};

use crate::error::{msr_filter_status, Failure};

/// What a filter or policy does with an access.
///
/// Functions take actions as `uint32_t` (any other value is `MSR_FILTER_STATUS_INVALID_ARGUMENT`)
/// and return them as this type.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum msr_filter_action {
    /// The kernel handles the access as if there were no filter.
    Allow = 0,
    /// The kernel exits to user space with reason FILTER (or injects #GP without that exit).
    Deny = 1,
}

impl From<Action> for msr_filter_action {
    fn from(action: Action) -> Self {
        match action {
            Action::Allow => msr_filter_action::Allow,
            Action::Deny => msr_filter_action::Deny,
        }
    }
}

/// Access types, with the kernel's range flag values (`KVM_MSR_FILTER_READ` = 1,
/// `KVM_MSR_FILTER_WRITE` = 2). Rules and handlers take READ, WRITE or READ_WRITE; `decide`,
/// `explain` take one access, READ or WRITE. Passed as `uint32_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum msr_filter_access {
    /// `rdmsr`.
    Read = 1,
    /// `wrmsr`.
    Write = 2,
    /// Both.
    ReadWrite = 3,
}

/// MSR exit reasons, with the kernel's values (`KVM_MSR_EXIT_REASON_INVAL` = 1, `_UNKNOWN` = 2,
/// `_FILTER` = 4), combined as a bit mask where a function takes several. Passed as `uint32_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum msr_filter_exit_reason {
    /// KVM knows the MSR but refused the value or access.
    Inval = 1,
    /// KVM does not know the MSR.
    Unknown = 2,
    /// The filter denied the access.
    Filter = 4,
}

/// What decided an access (see `msr_filter_filter_explain`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum msr_filter_decider {
    /// An x2APIC MSR (0x800-0x8ff): the kernel never filters them.
    X2apic = 0,
    /// A range: `slot` and `bit` say which and where.
    Range = 1,
    /// No range matched: the filter's default action.
    Default = 2,
    /// The filter removes filtering (default allow, no ranges).
    NoFilter = 3,
}

/// What a dispatch call did with an exit.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum msr_filter_outcome {
    /// Not an MSR exit: untouched; the VMM handles it.
    NotMsr = 0,
    /// An MSR exit, completed successfully (`data` set for a read, `error` = 0).
    Completed = 1,
    /// An MSR exit, completed with #GP for the guest (`error` = 1).
    Gp = 2,
}

/// The checked action of a C value.
pub(crate) fn action_from_c(action: u32) -> Result<Action, Failure> {
    match action {
        0 => Ok(Action::Allow),
        1 => Ok(Action::Deny),
        _ => Err(Failure::new(
            msr_filter_status::InvalidArgument,
            format_args!("action {action} is neither MSR_FILTER_ACTION_ALLOW (0) nor _DENY (1)"),
        )),
    }
}

/// The checked access set of a C value: READ, WRITE or READ_WRITE.
pub(crate) fn access_from_c(access: u32) -> Result<Access, Failure> {
    match Access::from_bits(access) {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(Failure::new(
            msr_filter_status::InvalidArgument,
            format_args!(
                "access {access} is not MSR_FILTER_ACCESS_READ (1), _WRITE (2) or _READ_WRITE (3)"
            ),
        )),
    }
}

/// The checked single access of a C value: READ or WRITE.
pub(crate) fn access_type_from_c(access: u32) -> Result<AccessType, Failure> {
    match access {
        1 => Ok(AccessType::Read),
        2 => Ok(AccessType::Write),
        _ => Err(Failure::fixed(
            msr_filter_status::InvalidArgument,
            "`access` must be one access: MSR_FILTER_ACCESS_READ (1) or MSR_FILTER_ACCESS_WRITE (2)",
        )),
    }
}

// The C enums spell the kernel's numbers as literals (cbindgen writes them into the header);
// these checks tie each to the one place msr-filter-core keeps it.
const _: () = {
    use msr_filter_core::abi;
    assert!(msr_filter_access::Read as u32 == abi::RANGE_READ);
    assert!(msr_filter_access::Write as u32 == abi::RANGE_WRITE);
    assert!(msr_filter_exit_reason::Inval as u32 == abi::EXIT_REASON_INVAL);
    assert!(msr_filter_exit_reason::Unknown as u32 == abi::EXIT_REASON_UNKNOWN);
    assert!(msr_filter_exit_reason::Filter as u32 == abi::EXIT_REASON_FILTER);
    assert!(crate::dispatch::MSR_FILTER_KVM_EXIT_X86_RDMSR == abi::EXIT_X86_RDMSR);
    assert!(crate::dispatch::MSR_FILTER_KVM_EXIT_X86_WRMSR == abi::EXIT_X86_WRMSR);
};
