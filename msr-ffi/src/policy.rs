//! Policies: parsed from text or built rule by rule, then packed into a filter.

use std::ffi::c_char;

use msr_filter_core::{policy_text, statements, Action, PolicyView, Rule, Statement};

use crate::error::{arg_mut, arg_ref, ffi_boundary, msr_filter_status, Failure};
use crate::filter::msr_filter_filter;
use crate::types::{access_from_c, access_type_from_c, action_from_c, msr_filter_action};

/// A policy: a default action plus rules over inclusive MSR ranges, **later rules overriding
/// earlier ones**; any number of rules (the kernel's 16 ranges limit what packs, not what a
/// policy holds).
///
/// Created by `msr_filter_policy_parse` or `msr_filter_policy_new`, freed by
/// `msr_filter_policy_free`. Not thread-safe for changes: a policy being changed must not be
/// used by another thread at the same time; reading functions may run concurrently.
#[derive(Debug)]
pub struct msr_filter_policy {
    pub(crate) default: Action,
    pub(crate) rules: Vec<Rule>,
}

impl msr_filter_policy {
    pub(crate) fn view(&self) -> PolicyView<'_> {
        // Every rule was checked when it joined the policy.
        PolicyView::new(self.default, &self.rules).expect("rules are checked when added")
    }
}

/// One rule of a policy, as `msr_filter_policy_rule` returns it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct msr_filter_rule {
    /// First MSR covered.
    pub first: u32,
    /// Last MSR covered (inclusive).
    pub last: u32,
    /// The accesses it speaks for: a `msr_filter_access` value (READ, WRITE or READ_WRITE).
    pub access: u32,
    /// What it wants for them.
    pub action: msr_filter_action,
}

pub(crate) fn out_handle<T>(out: *mut *mut T, value: T) {
    // SAFETY: callers checked `out` for NULL; the caller of the exported function promises it is
    // writable.
    unsafe { *out = Box::into_raw(Box::new(value)) };
}

/// Parses policy text (`text`, `len` bytes, UTF-8, no NUL needed): one `default allow|deny`
/// line, then `allow|deny r|w|rw TARGET` lines, `#` comments; see the msr-filter README.
///
/// On success `*policy_out` receives a new policy, which the caller owns and frees with
/// `msr_filter_policy_free`. On `MSR_FILTER_STATUS_PARSE_ERROR`, `*line_out` and `*column_out`
/// (1-based; either may be NULL) receive where the error is, and the last error message reads
/// `line L, column C: message`; they are set to 0 on success. `*policy_out` is NULL on any
/// failure.
///
/// Thread-safe (touches no shared state); `text` is only read during the call.
///
/// # Safety
/// `text` must be readable for `len` bytes; `policy_out` writable; `line_out` and
/// `column_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_parse(
    text: *const c_char,
    len: usize,
    policy_out: *mut *mut msr_filter_policy,
    line_out: *mut u32,
    column_out: *mut u32,
) -> msr_filter_status {
    ffi_boundary!({
        let policy_out = arg_mut!(policy_out);
        *policy_out = std::ptr::null_mut();
        // SAFETY: both are NULL or writable, as the caller promises.
        let (line_out, column_out) = unsafe { (line_out.as_mut(), column_out.as_mut()) };
        let position = |line: u32, column: u32| {
            if let Some(l) = line_out {
                *l = line;
            }
            if let Some(c) = column_out {
                *c = column;
            }
        };
        if text.is_null() {
            return Err(Failure::fixed(
                msr_filter_status::NullArgument,
                "argument `text` is NULL",
            ));
        }
        // SAFETY: `text` is non-NULL and the caller promises `len` readable bytes there.
        let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) };
        let mut policy = msr_filter_policy {
            default: Action::Allow,
            rules: Vec::new(),
        };
        let parsed = policy_text(bytes).and_then(|text| {
            for item in statements(text) {
                match item?.0 {
                    Statement::Default(action) => policy.default = action,
                    Statement::Rule(rule) => policy.rules.push(rule),
                }
            }
            Ok(())
        });
        match parsed {
            Ok(()) => {
                position(0, 0);
                out_handle(policy_out, policy);
                Ok(())
            }
            Err(e) => {
                position(e.line(), e.column());
                Err(Failure::new(msr_filter_status::ParseError, e))
            }
        }
    })
}

/// Creates an empty policy with `default_action` (a `msr_filter_action`). The caller owns
/// `*policy_out` and frees it with `msr_filter_policy_free`.
///
/// Thread-safe. `MSR_FILTER_STATUS_INVALID_ARGUMENT` for an action that is neither ALLOW nor
/// DENY.
///
/// # Safety
/// `policy_out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_new(
    default_action: u32,
    policy_out: *mut *mut msr_filter_policy,
) -> msr_filter_status {
    ffi_boundary!({
        let policy_out = arg_mut!(policy_out);
        *policy_out = std::ptr::null_mut();
        let default = action_from_c(default_action)?;
        out_handle(
            policy_out,
            msr_filter_policy {
                default,
                rules: Vec::new(),
            },
        );
        Ok(())
    })
}

/// Appends the rule `action` (a `msr_filter_action`) for `access` (a `msr_filter_access`:
/// READ, WRITE or READ_WRITE) over MSRs `first..=last`. It overrides every earlier rule where
/// they overlap. No capacity limit.
///
/// `MSR_FILTER_STATUS_INVALID_ARGUMENT` for `first > last`, an access or action out of its
/// domain; the policy is then unchanged.
///
/// Changes the policy: no other thread may use it during the call. The caller keeps
/// ownership.
///
/// # Safety
/// `policy` must be a live policy from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_add_rule(
    policy: *mut msr_filter_policy,
    first: u32,
    last: u32,
    access: u32,
    action: u32,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_mut!(policy);
        let rule = Rule::new(first, last, access_from_c(access)?, action_from_c(action)?);
        rule.check(policy.rules.len())
            .map_err(|e| Failure::new(msr_filter_status::InvalidArgument, e))?;
        policy.rules.push(rule);
        Ok(())
    })
}

/// Replaces the policy's default action (a `msr_filter_action`).
///
/// Changes the policy: no other thread may use it during the call.
///
/// # Safety
/// `policy` must be a live policy from this library.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_set_default_action(
    policy: *mut msr_filter_policy,
    default_action: u32,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_mut!(policy);
        policy.default = action_from_c(default_action)?;
        Ok(())
    })
}

/// `*action_out` = the policy's default action.
///
/// Only reads the policy: may run concurrently with other reads.
///
/// # Safety
/// `policy` must be a live policy from this library; `action_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_default_action(
    policy: *const msr_filter_policy,
    action_out: *mut msr_filter_action,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_ref!(policy);
        let action_out = arg_mut!(action_out);
        *action_out = policy.default.into();
        Ok(())
    })
}

/// `*count_out` = the number of rules.
///
/// Only reads the policy: may run concurrently with other reads.
///
/// # Safety
/// `policy` must be a live policy from this library; `count_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_rule_count(
    policy: *const msr_filter_policy,
    count_out: *mut usize,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_ref!(policy);
        let count_out = arg_mut!(count_out);
        *count_out = policy.rules.len();
        Ok(())
    })
}

/// `*rule_out` = rule number `index` (0-based, in order; later ones override earlier ones).
/// `MSR_FILTER_STATUS_OUT_OF_RANGE` past the last rule.
///
/// Only reads the policy: may run concurrently with other reads.
///
/// # Safety
/// `policy` must be a live policy from this library; `rule_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_rule(
    policy: *const msr_filter_policy,
    index: usize,
    rule_out: *mut msr_filter_rule,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_ref!(policy);
        let rule_out = arg_mut!(rule_out);
        let rule = policy.rules.get(index).ok_or_else(|| {
            Failure::new(
                msr_filter_status::OutOfRange,
                format_args!(
                    "rule {index} asked for, but the policy has {}",
                    policy.rules.len()
                ),
            )
        })?;
        *rule_out = msr_filter_rule {
            first: rule.first,
            last: rule.last,
            access: rule.access.bits(),
            action: rule.action.into(),
        };
        Ok(())
    })
}

/// `*action_out` = what the policy wants for `access` (a `msr_filter_access`: READ or WRITE)
/// to MSR `index`: allow for x2APIC MSRs, else the last rule covering it, else the default.
///
/// Only reads the policy: may run concurrently with other reads.
///
/// # Safety
/// `policy` must be a live policy from this library; `action_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_decide(
    policy: *const msr_filter_policy,
    index: u32,
    access: u32,
    action_out: *mut msr_filter_action,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_ref!(policy);
        let action_out = arg_mut!(action_out);
        *action_out = policy
            .view()
            .decide(index, access_type_from_c(access)?)
            .into();
        Ok(())
    })
}

/// Packs the policy into the fewest kernel ranges (then the fewest bitmap bytes), deciding every
/// MSR and access as the policy does. The caller owns `*filter_out` and frees it with
/// `msr_filter_filter_free`; `*filter_out` is NULL on failure.
///
/// `MSR_FILTER_STATUS_PACK_ERROR` when no kernel filter can do what the policy asks (more than
/// 16 ranges needed, a deny over x2APIC MSRs, ...): the last error message says which rules.
///
/// Only reads the policy. Uses at most 256 KiB of the calling thread's stack in a release build
/// (512 KiB in a build with debug assertions); `tests/stack.rs` runs it on a thread of exactly
/// that stack.
///
/// # Safety
/// `policy` must be a live policy from this library; `filter_out` writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_pack(
    policy: *const msr_filter_policy,
    filter_out: *mut *mut msr_filter_filter,
) -> msr_filter_status {
    ffi_boundary!({
        let policy = arg_ref!(policy);
        let filter_out = arg_mut!(filter_out);
        *filter_out = std::ptr::null_mut();
        let packed = msr_filter_kvm::pack(policy.view())
            .map_err(|e| Failure::new(msr_filter_status::PackError, e))?;
        *filter_out = msr_filter_filter::new_handle(packed.filter, packed.proven_minimal);
        Ok(())
    })
}

/// Frees a policy. NULL is allowed and does nothing. Filters packed from it and dispatchers
/// built from it stay valid.
///
/// # Safety
/// `policy` must be NULL or a live policy from this library, not used by any other thread and
/// never used again.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_policy_free(policy: *mut msr_filter_policy) {
    let _ = ffi_boundary!({
        if !policy.is_null() {
            // SAFETY: the caller hands back a pointer from `Box::into_raw` in this library,
            // which nothing uses any more.
            drop(unsafe { Box::from_raw(policy) });
        }
        Ok(())
    });
}
