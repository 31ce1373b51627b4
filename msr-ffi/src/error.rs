//! Statuses, the thread's last error message, and the panic boundary every exported function
//! goes through.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::c_char;

/// The result of every fallible function of this library. Values are stable: new ones are only
/// ever appended.
///
/// In C the type is `uint32_t` (cbindgen writes the constants as an enum beside it), so a value
/// read back from elsewhere is any number; functions taking a status take it as `uint32_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum msr_filter_status {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL.
    NullArgument = 1,
    /// Policy text does not parse; the line and column come back through the parse function's
    /// out-parameters and in the last error message.
    ParseError = 2,
    /// The policy cannot be packed into the kernel's 16 ranges (or asks for the impossible, such
    /// as denying x2APIC MSRs).
    PackError = 3,
    /// A `struct kvm_msr_filter` the kernel would refuse.
    InvalidFilter = 4,
    /// A KVM ioctl failed (the message names it and the errno).
    KvmError = 5,
    /// A dispatcher cannot be built: overlapping handlers, a handler over x2APIC MSRs, ...
    BuildError = 6,
    /// The library panicked (a bug): the call did nothing observable beyond what the message
    /// says. Please report it.
    Panic = 7,
    /// A non-pointer argument is out of its domain (an access, action or exit reason value the
    /// function does not take, a malformed rule, a bad file descriptor).
    InvalidArgument = 8,
    /// An index (a range slot, a handler number) past the end.
    OutOfRange = 9,
    /// The caller's buffer is too small; what fits was written and the needed length returned.
    BufferTooSmall = 10,
    /// The kernel lacks `KVM_CAP_X86_USER_SPACE_MSR` or `KVM_CAP_X86_MSR_FILTER`.
    MissingCapability = 11,
    /// Dropping the FILTER exit reason was refused: a filter is (or may be) installed, and
    /// without that exit the kernel turns every denied access into #GP.
    FilterExitRequired = 12,
}

impl msr_filter_status {
    /// The enumerator's C spelling.
    pub(crate) fn name(self) -> &'static std::ffi::CStr {
        match self {
            msr_filter_status::Ok => c"MSR_FILTER_STATUS_OK",
            msr_filter_status::NullArgument => c"MSR_FILTER_STATUS_NULL_ARGUMENT",
            msr_filter_status::ParseError => c"MSR_FILTER_STATUS_PARSE_ERROR",
            msr_filter_status::PackError => c"MSR_FILTER_STATUS_PACK_ERROR",
            msr_filter_status::InvalidFilter => c"MSR_FILTER_STATUS_INVALID_FILTER",
            msr_filter_status::KvmError => c"MSR_FILTER_STATUS_KVM_ERROR",
            msr_filter_status::BuildError => c"MSR_FILTER_STATUS_BUILD_ERROR",
            msr_filter_status::Panic => c"MSR_FILTER_STATUS_PANIC",
            msr_filter_status::InvalidArgument => c"MSR_FILTER_STATUS_INVALID_ARGUMENT",
            msr_filter_status::OutOfRange => c"MSR_FILTER_STATUS_OUT_OF_RANGE",
            msr_filter_status::BufferTooSmall => c"MSR_FILTER_STATUS_BUFFER_TOO_SMALL",
            msr_filter_status::MissingCapability => c"MSR_FILTER_STATUS_MISSING_CAPABILITY",
            msr_filter_status::FilterExitRequired => c"MSR_FILTER_STATUS_FILTER_EXIT_REQUIRED",
        }
    }

    /// Every status, in value order.
    pub(crate) const ALL: [msr_filter_status; 13] = [
        msr_filter_status::Ok,
        msr_filter_status::NullArgument,
        msr_filter_status::ParseError,
        msr_filter_status::PackError,
        msr_filter_status::InvalidFilter,
        msr_filter_status::KvmError,
        msr_filter_status::BuildError,
        msr_filter_status::Panic,
        msr_filter_status::InvalidArgument,
        msr_filter_status::OutOfRange,
        msr_filter_status::BufferTooSmall,
        msr_filter_status::MissingCapability,
        msr_filter_status::FilterExitRequired,
    ];
}

/// Copies `text` into the caller's buffer as a NUL-terminated string, cut (at a character
/// boundary) to `len - 1` bytes; `*out_len` is the full text's length. `BufferTooSmall` when it
/// was cut.
///
/// # Safety
/// `out_len` writable; `buf` writable for `len` bytes (may be NULL only when `len` is 0).
pub(crate) unsafe fn copy_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> msr_filter_status {
    let mut n = text.len().min(len.saturating_sub(1));
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    if len > 0 {
        // SAFETY: the caller gives `len` writable bytes at `buf` (non-NULL since `len > 0`);
        // `n < len`, so the text bytes and the NUL fit; the text is Rust-owned memory, distinct
        // from the caller's buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    // SAFETY: the caller promises `out_len` writable.
    unsafe { *out_len = text.len() };
    if n < text.len() {
        msr_filter_status::BufferTooSmall
    } else {
        msr_filter_status::Ok
    }
}

/// Why a call failed: its status and the message kept as the thread's last error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: msr_filter_status,
    pub(crate) message: Cow<'static, str>,
}

impl Failure {
    /// A failure with a fixed message (setting it allocates nothing).
    pub(crate) const fn fixed(status: msr_filter_status, message: &'static str) -> Failure {
        Failure {
            status,
            message: Cow::Borrowed(message),
        }
    }

    /// A failure whose message is `error`'s `Display`.
    pub(crate) fn new(status: msr_filter_status, error: impl std::fmt::Display) -> Failure {
        Failure {
            status,
            message: Cow::Owned(error.to_string()),
        }
    }
}

/// What an exported function's body returns; [`boundary`] turns it into a status.
pub(crate) type Outcome = Result<(), Failure>;

thread_local! {
    static LAST_ERROR: RefCell<Cow<'static, str>> = const { RefCell::new(Cow::Borrowed("")) };
}

fn set_last_error(message: Cow<'static, str>) {
    // `try_with`: during thread teardown the slot may be gone; the status still says enough.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

/// Runs an exported function's body: a panic becomes [`msr_filter_status::Panic`], a failure
/// becomes its status and the thread's last error message. Success leaves the last error as it
/// was and allocates nothing. Inlined, with the failure paths out of line, so that the boundary
/// costs a hot call next to nothing (see the `ffi` bench).
#[inline(always)]
pub(crate) fn boundary(body: impl FnOnce() -> Outcome) -> msr_filter_status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => msr_filter_status::Ok,
        Ok(Err(failure)) => failed(failure),
        Err(payload) => panicked(payload),
    }
}

#[cold]
#[inline(never)]
fn failed(failure: Failure) -> msr_filter_status {
    set_last_error(failure.message);
    failure.status
}

#[cold]
#[inline(never)]
fn panicked(payload: Box<dyn std::any::Any + Send>) -> msr_filter_status {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    set_last_error(Cow::Owned(format!(
        "msr-filter panicked (a bug; please report it): {what}"
    )));
    msr_filter_status::Panic
}

/// Wraps an exported function's body in [`boundary`]: the body is a block that evaluates to
/// an [`Outcome`] and may use `?`.
macro_rules! ffi_boundary {
    ($body:block) => {
        $crate::error::boundary(move || -> $crate::error::Outcome { $body })
    };
}
pub(crate) use ffi_boundary;

/// `&T` from a pointer argument, or a `NULL_ARGUMENT` failure naming it.
macro_rules! arg_ref {
    ($p:ident) => {
        // SAFETY: every exported function documents that a non-NULL pointer argument must
        // point to a valid, live object of its type for the duration of the call.
        match unsafe { $p.as_ref() } {
            Some(r) => r,
            None => {
                return Err($crate::error::Failure::fixed(
                    $crate::error::msr_filter_status::NullArgument,
                    concat!("argument `", stringify!($p), "` is NULL"),
                ))
            }
        }
    };
}
pub(crate) use arg_ref;

/// `&mut T` from a pointer argument, or a `NULL_ARGUMENT` failure naming it.
macro_rules! arg_mut {
    ($p:ident) => {
        // SAFETY: every exported function documents that a non-NULL pointer argument must
        // point to a valid, live object of its type, not used elsewhere during the call.
        match unsafe { $p.as_mut() } {
            Some(r) => r,
            None => {
                return Err($crate::error::Failure::fixed(
                    $crate::error::msr_filter_status::NullArgument,
                    concat!("argument `", stringify!($p), "` is NULL"),
                ))
            }
        }
    };
}
pub(crate) use arg_mut;

/// The C spelling of a status (`"MSR_FILTER_STATUS_OK"`, ...), or
/// `"MSR_FILTER_STATUS_(unknown)"` for a value that is none.
///
/// The string is static: never free it. Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn msr_filter_status_name(status: u32) -> *const c_char {
    msr_filter_status::ALL
        .get(status as usize)
        .map_or(c"MSR_FILTER_STATUS_(unknown)", |s| s.name())
        .as_ptr()
}

/// Copies the message of the last call **on this thread** that returned a status other than
/// `MSR_FILTER_STATUS_OK` (empty if none did) into `buf`, NUL-terminated, truncated (at a
/// character boundary) to `len - 1` bytes; `*out_len` receives the message's full length in
/// bytes, without the NUL. Parse errors read `line L, column C: message`.
///
/// Calls that succeed leave the message as it was; this function never changes it.
///
/// `buf` may be NULL only when `len` is 0 (to ask for the length). Returns
/// `MSR_FILTER_STATUS_BUFFER_TOO_SMALL` when the message was truncated,
/// `MSR_FILTER_STATUS_NULL_ARGUMENT` when `out_len` is NULL, or `buf` is NULL with `len > 0`.
/// The caller owns `buf`. Thread-safe: each thread has its own last error.
///
/// # Safety
/// `buf` must be writable for `len` bytes; `out_len` must be writable.
#[no_mangle]
pub unsafe extern "C" fn msr_filter_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> msr_filter_status {
    // Not through `boundary`: this function must not replace the message it reports.
    let result = std::panic::catch_unwind(|| {
        if out_len.is_null() || (buf.is_null() && len > 0) {
            return msr_filter_status::NullArgument;
        }
        let copy = |message: &str| {
            // SAFETY: checked above: `out_len` non-NULL, `buf` non-NULL when `len > 0`; the
            // caller promises both writable.
            unsafe { copy_text(message, buf, len, out_len) }
        };
        LAST_ERROR
            .try_with(|slot| match slot.try_borrow() {
                Ok(message) => copy(&message),
                Err(_) => copy(""),
            })
            .unwrap_or_else(|_| copy(""))
    });
    result.unwrap_or(msr_filter_status::Panic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        let mut buf = [0 as c_char; 256];
        let mut len = 0;
        // SAFETY: a live buffer of its length and a live usize.
        let status = unsafe { msr_filter_last_error_message(buf.as_mut_ptr(), 256, &mut len) };
        assert_eq!(status, msr_filter_status::Ok);
        // SAFETY: the function NUL-terminated the buffer.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_panic_is_a_status_and_a_message_never_an_unwind() {
        let status = ffi_boundary!({
            let v: Vec<u32> = Vec::new();
            let _ = v[3];
            Ok(())
        });
        assert_eq!(status, msr_filter_status::Panic);
        let message = last_error();
        assert!(message.contains("panicked"), "{message}");
        assert!(message.contains("index out of bounds"), "{message}");
        // A later success keeps it.
        assert_eq!(ffi_boundary!({ Ok(()) }), msr_filter_status::Ok);
        assert_eq!(last_error(), message);
    }

    #[test]
    fn status_names_are_the_c_enumerators_in_value_order() {
        for (value, status) in msr_filter_status::ALL.iter().enumerate() {
            assert_eq!(*status as usize, value);
            // SAFETY: the function returns a static NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(msr_filter_status_name(value as u32)) };
            assert!(name.to_str().unwrap().starts_with("MSR_FILTER_STATUS_"));
        }
        // SAFETY: as above.
        let unknown = unsafe { std::ffi::CStr::from_ptr(msr_filter_status_name(999)) };
        assert_eq!(unknown, c"MSR_FILTER_STATUS_(unknown)");
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        set_last_error(Cow::Borrowed("ab\u{e9}cd"));
        let mut buf = [0x55 as c_char; 4];
        let mut len = 0;
        // SAFETY: a live buffer of its length and a live usize.
        let status = unsafe { msr_filter_last_error_message(buf.as_mut_ptr(), 4, &mut len) };
        assert_eq!(status, msr_filter_status::BufferTooSmall);
        assert_eq!(len, 6);
        // "ab" then NUL: the two-byte é does not fit in the one byte left.
        assert_eq!(buf[..3], [b'a' as c_char, b'b' as c_char, 0]);
    }
}
