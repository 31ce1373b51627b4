//! The C ABI under arbitrary call sequences with arbitrary arguments, NULLs included (built with
//! AddressSanitizer by `cargo fuzz`): no entry point may crash, read or write out of bounds, or
//! leak, whatever the order of calls; every status is a known one. Handles are used only while
//! alive (a freed handle is the caller's bug in any C library), so a handle is freed once and
//! then forgotten.
#![no_main]

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};

use libfuzzer_sys::fuzz_target;
use msr_filter_ffi::*;

/// The input, read a little at a time; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// An MSR index: near interesting places more often than anywhere.
    fn msr(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => u32::from(self.u8()) * 0x10,
            1 => 0x800 + u32::from(self.u8()),
            2 => 0x4000_0000 + u32::from(self.u8()),
            _ => self.u32(),
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// A live handle of the list, or NULL (one time in four, or when there is none).
fn pick<T>(b: &mut Bytes<'_>, list: &[*mut T]) -> *mut T {
    let k = b.u8();
    if k % 4 == 0 || list.is_empty() {
        null_mut()
    } else {
        list[usize::from(k) % list.len()]
    }
}

/// Removes and returns a live handle (for a free), or NULL.
fn take<T>(b: &mut Bytes<'_>, list: &mut Vec<*mut T>) -> *mut T {
    let k = b.u8();
    if k % 4 == 0 || list.is_empty() {
        null_mut()
    } else {
        list.swap_remove(usize::from(k) % list.len())
    }
}

unsafe extern "C" fn read_cb(opaque: *mut c_void, _: u32, index: u32, value: *mut u64) -> c_int {
    // SAFETY: the library passes a valid `value`; `opaque` is unused.
    unsafe { *value = u64::from(index) };
    let _ = opaque;
    c_int::from(index % 3 == 0)
}

unsafe extern "C" fn write_cb(_: *mut c_void, _: u32, index: u32, _: u64) -> c_int {
    c_int::from(index % 5 == 0)
}

fn known(status: msr_filter_status) {
    let name = msr_filter_status_name(status as u32);
    assert!(!name.is_null());
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut policies: Vec<*mut msr_filter_policy> = Vec::new();
    let mut filters: Vec<*mut msr_filter_filter> = Vec::new();
    let mut builders: Vec<*mut msr_filter_dispatcher_builder> = Vec::new();
    let mut dispatchers: Vec<*mut msr_filter_dispatcher> = Vec::new();
    let (mut line, mut column) = (0u32, 0u32);
    // SAFETY (for the whole body): every handle passed is NULL or alive (created above and not
    // yet freed); every out-pointer is NULL or points at local storage of the right type;
    // buffers are passed with their true lengths.
    unsafe {
        for _ in 0..64 {
            if b.0.is_empty() {
                break;
            }
            match b.u8() % 20 {
                0 => {
                    let n = usize::from(b.u8());
                    let text = b.bytes(n);
                    let mut p: *mut msr_filter_policy = null_mut();
                    let out = if b.u8() % 8 == 0 { null_mut() } else { &mut p as *mut _ };
                    known(msr_filter_policy_parse(
                        text.as_ptr().cast(),
                        text.len(),
                        out,
                        &mut line,
                        &mut column,
                    ));
                    if !p.is_null() {
                        policies.push(p);
                    }
                }
                1 => {
                    let mut p = null_mut();
                    known(msr_filter_policy_new(u32::from(b.u8() % 3), &mut p));
                    if !p.is_null() {
                        policies.push(p);
                    }
                }
                2 => {
                    let p = pick(&mut b, &policies);
                    let first = b.msr();
                    let last = first.saturating_add(u32::from(b.u8()) * 7);
                    let (access, action) = (u32::from(b.u8() % 5), u32::from(b.u8() % 3));
                    known(msr_filter_policy_add_rule(p, first, last, access, action));
                }
                3 => {
                    let p = pick(&mut b, &policies);
                    let mut f = null_mut();
                    known(msr_filter_policy_pack(p, &mut f));
                    if !f.is_null() {
                        filters.push(f);
                    }
                }
                4 => {
                    let f = pick(&mut b, &filters);
                    let mut action = MaybeUninit::uninit();
                    let out = if b.u8() % 8 == 0 { null_mut() } else { action.as_mut_ptr() };
                    known(msr_filter_filter_decide(f, b.msr(), u32::from(b.u8() % 3), out));
                    let mut e = MaybeUninit::uninit();
                    known(msr_filter_filter_explain(f, b.msr(), u32::from(b.u8() % 3), e.as_mut_ptr()));
                }
                5 => {
                    let f = pick(&mut b, &filters);
                    let mut r = MaybeUninit::uninit();
                    known(msr_filter_filter_range(f, usize::from(b.u8() % 20), r.as_mut_ptr()));
                    let mut n = 0usize;
                    known(msr_filter_filter_range_count(f, &mut n));
                    known(msr_filter_filter_bitmap_bytes(f, &mut n));
                    let mut minimal = false;
                    known(msr_filter_filter_proven_minimal(f, &mut minimal));
                    let mut a = MaybeUninit::uninit();
                    known(msr_filter_filter_default_action(f, a.as_mut_ptr()));
                }
                6 => {
                    let f = pick(&mut b, &filters);
                    let mut kvm: *const msr_filter_kvm_msr_filter = null();
                    known(msr_filter_filter_kvm_msr_filter(f, &mut kvm));
                    if !kvm.is_null() {
                        // Read it back as another program's filter, possibly edited.
                        let mut copy = *kvm;
                        if b.u8() % 2 == 0 {
                            copy.flags = u32::from(b.u8() % 4);
                            let slot = usize::from(b.u8() % 16);
                            copy.ranges[slot].flags = u32::from(b.u8() % 4);
                            if copy.ranges[slot].bitmap.is_null() {
                                copy.ranges[slot].nmsrs = 0;
                            } else {
                                // Never more MSRs than the bitmap the filter owns holds.
                                copy.ranges[slot].nmsrs =
                                    copy.ranges[slot].nmsrs.min(u32::from(b.u8()));
                            }
                        }
                        let mut g = null_mut();
                        known(msr_filter_filter_from_kvm(&copy, &mut g));
                        if !g.is_null() {
                            filters.push(g);
                        }
                    }
                }
                7 => {
                    let p = pick(&mut b, &policies);
                    let mut bl = null_mut();
                    known(msr_filter_dispatcher_builder_new(p, &mut bl));
                    if !bl.is_null() {
                        builders.push(bl);
                    }
                }
                8 => {
                    let bl = pick(&mut b, &builders);
                    let first = b.msr();
                    let last = first.saturating_add(u32::from(b.u8() % 16));
                    let access = u32::from(b.u8() % 5);
                    let which = b.u8();
                    let read: msr_filter_read_cb = if which & 1 != 0 { Some(read_cb) } else { None };
                    let write: msr_filter_write_cb = if which & 2 != 0 { Some(write_cb) } else { None };
                    known(msr_filter_dispatcher_builder_add_handler(
                        bl,
                        first,
                        last,
                        access,
                        read,
                        write,
                        null_mut(),
                    ));
                }
                9 => {
                    let bl = pick(&mut b, &builders);
                    let reasons = u32::from(b.u8() % 16);
                    match b.u8() % 3 {
                        0 => known(msr_filter_dispatcher_builder_route_gp(bl, reasons)),
                        1 => known(msr_filter_dispatcher_builder_route_value(bl, reasons, 7)),
                        _ => known(msr_filter_dispatcher_builder_route_callbacks(
                            bl,
                            reasons,
                            Some(read_cb),
                            Some(write_cb),
                            null_mut(),
                        )),
                    }
                }
                10 => {
                    let bl = pick(&mut b, &builders);
                    let mut d = null_mut();
                    known(msr_filter_dispatcher_builder_build(bl, &mut d));
                    if !d.is_null() {
                        dispatchers.push(d);
                    }
                }
                11 => {
                    let d = pick(&mut b, &dispatchers);
                    let (mut data, mut error) = (0u64 as std::ffi::c_ulonglong, 0u8);
                    let mut o = MaybeUninit::uninit();
                    let nulls = b.u8();
                    known(msr_filter_dispatcher_dispatch_msr(
                        d,
                        u32::from(b.u8() % 12),
                        b.u8() % 2 == 0,
                        u32::from(b.u8() % 9),
                        b.msr(),
                        if nulls & 1 != 0 { null_mut() } else { &mut data },
                        if nulls & 2 != 0 { null_mut() } else { &mut error },
                        if nulls & 4 != 0 { null_mut() } else { o.as_mut_ptr() },
                    ));
                }
                12 => {
                    let d = pick(&mut b, &dispatchers);
                    let mut n = 0usize;
                    known(msr_filter_dispatcher_handler_count(d, &mut n));
                    let mut hs = MaybeUninit::uninit();
                    known(msr_filter_dispatcher_handler_stats(d, usize::from(b.u8()), hs.as_mut_ptr()));
                    let mut rs = MaybeUninit::uninit();
                    known(msr_filter_dispatcher_route_stats(d, rs.as_mut_ptr()));
                    let cap = usize::from(b.u8() % 8);
                    let mut per: Vec<MaybeUninit<msr_filter_route_msr_stats>> =
                        (0..cap).map(|_| MaybeUninit::uninit()).collect();
                    let buf = if cap == 0 && b.u8() % 2 == 0 {
                        null_mut()
                    } else {
                        per.as_mut_ptr().cast()
                    };
                    known(msr_filter_dispatcher_route_msr_stats(d, buf, cap, &mut n));
                    let mut reasons = 0u32;
                    known(msr_filter_dispatcher_exit_reasons(d, &mut reasons));
                    let mut f = null_mut();
                    known(msr_filter_dispatcher_filter(d, &mut f));
                    if !f.is_null() {
                        filters.push(f);
                    }
                }
                13 => {
                    let p = pick(&mut b, &policies);
                    let mut n = 0usize;
                    known(msr_filter_policy_rule_count(p, &mut n));
                    let mut r = MaybeUninit::uninit();
                    known(msr_filter_policy_rule(p, usize::from(b.u8()), r.as_mut_ptr()));
                    let mut a = MaybeUninit::uninit();
                    known(msr_filter_policy_decide(p, b.msr(), u32::from(b.u8() % 3), a.as_mut_ptr()));
                    known(msr_filter_policy_default_action(p, a.as_mut_ptr()));
                    known(msr_filter_policy_set_default_action(p, u32::from(b.u8() % 3)));
                }
                14 => {
                    let len = usize::from(b.u8() % 64);
                    let mut buf = vec![0u8; len];
                    let mut out = 0usize;
                    let ptr = if len == 0 && b.u8() % 2 == 0 {
                        null_mut()
                    } else {
                        buf.as_mut_ptr().cast()
                    };
                    known(msr_filter_last_error_message(ptr, len, &mut out));
                    let _ = msr_filter_status_name(b.u32());
                }
                15 => msr_filter_policy_free(take(&mut b, &mut policies)),
                16 => msr_filter_filter_free(take(&mut b, &mut filters)),
                17 => msr_filter_dispatcher_builder_free(take(&mut b, &mut builders)),
                18 => msr_filter_dispatcher_free(take(&mut b, &mut dispatchers)),
                _ => {
                    // The whole-path entry points with NULL handles (no VM fd is opened here).
                    known(msr_filter_vm_install(null_mut(), pick(&mut b, &filters)));
                    let mut live = null_mut();
                    known(msr_filter_live_new(null_mut(), 1, null_mut(), &mut live));
                    assert!(live.is_null());
                    known(msr_filter_live_dispatch_msr(
                        null(),
                        0,
                        false,
                        4,
                        0x10,
                        null_mut(),
                        null_mut(),
                        null_mut(),
                    ));
                }
            }
        }
        for p in policies {
            msr_filter_policy_free(p);
        }
        for f in filters {
            msr_filter_filter_free(f);
        }
        for bl in builders {
            msr_filter_dispatcher_builder_free(bl);
        }
        for d in dispatchers {
            msr_filter_dispatcher_free(d);
        }
    }
});
