//! Learning mode on the real kernel: a guest script of MSR accesses runs under learning mode
//! with the same outcomes as with no filter at all; the learned policy, installed, gives the
//! same outcomes again with no exit to user space for any learned MSR, and denies an MSR the
//! script never used.

mod common;

use common::{rd, skip_without_kvm, wr};
use kvm_ioctls::MsrExitReason;
use msr_filter_core::{AccessType, Action, Policy};
use msr_filter_kvm::guest::{GuestResult, GuestVm, MsrAccess, Outcome};
use msr_filter_kvm::learn::{Learned, Learner};
use msr_filter_kvm::{Dispatcher, MsrInterception};

const TSC: u32 = 0x10;
const SYSENTER_CS: u32 = 0x174;
const SYSENTER_ESP: u32 = 0x175;
const MISC_ENABLE: u32 = 0x1a0;
const EFER: u32 = 0xc000_0080;
const KERNEL_GS_BASE: u32 = 0xc000_0102;
const UNKNOWN: u32 = 0x474f_4f00;

fn script() -> Vec<MsrAccess> {
    vec![
        wr(SYSENTER_CS, 0x10),
        rd(SYSENTER_CS),
        rd(MISC_ENABLE),
        rd(EFER),
        wr(KERNEL_GS_BASE, 0x1234_5678),
        rd(KERNEL_GS_BASE),
        rd(UNKNOWN),
        wr(UNKNOWN, 1),
        rd(SYSENTER_CS),
    ]
}

/// The outcome as the guest saw it; the TSC's value changes, so only whether it completed.
fn seen(access: MsrAccess, o: &Outcome) -> GuestResult {
    match (access, o.result) {
        (MsrAccess::Read { index: TSC }, GuestResult::Completed { .. }) => {
            GuestResult::Completed { value: None }
        }
        (_, r) => r,
    }
}

#[test]
fn learn_then_install_the_learned_policy() {
    if skip_without_kvm() {
        return;
    }
    // 1. No filter: what the guest gets from KVM itself.
    let mut plain = GuestVm::new().unwrap();
    let baseline: Vec<GuestResult> = script()
        .into_iter()
        .map(|a| seen(a, &plain.run_raw(a).unwrap()))
        .collect();
    assert_eq!(baseline[6], GuestResult::GeneralProtection, "unknown MSR");

    // 2. Learning: every access exits and is forwarded to KVM on the exiting vCPU.
    let mut g = GuestVm::new().unwrap();
    let learner = Learner::new();
    let mut msrs = MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty()).unwrap();
    msrs.install(learner.filter()).unwrap();
    let mut recorder = learner.vcpu(g.vcpu().fd()).unwrap();
    let mut learned_run = Vec::new();
    for a in script() {
        let o = g
            .run(a, &mut |exit| {
                recorder.forward(exit);
            })
            .unwrap();
        assert_eq!(
            o.exit.map(|e| e.reason),
            Some(MsrExitReason::Filter),
            "{a:x?}: every access exits in learning mode"
        );
        learned_run.push(seen(a, &o));
    }
    assert_eq!(
        learned_run, baseline,
        "learning mode changes nothing the guest sees"
    );

    // 3. The learned policy: the accesses KVM completed, nothing else.
    let mut learned = Learned::new();
    learned.merge(&recorder);
    let counts: Vec<(u32, AccessType, u64, u64)> = learned
        .observations()
        .map(|(i, a, o)| (i, a, o.count, o.faults))
        .collect();
    assert!(
        counts.contains(&(SYSENTER_CS, AccessType::Read, 2, 0)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&(UNKNOWN, AccessType::Read, 1, 1)),
        "{counts:?}"
    );
    let policy = learned.policy().unwrap();
    println!("{}", policy.text);
    assert!(policy
        .text
        .contains("allow rw 0x174  # IA32_SYSENTER_CS, 2 reads, 1 writes"));
    let text_policy: Policy<32> = Policy::parse(&policy.text).unwrap();
    assert_eq!(text_policy.rules(), &policy.rules[..]);
    assert_eq!(text_policy.decide(UNKNOWN, AccessType::Read), Action::Deny);
    assert_eq!(
        text_policy.decide(SYSENTER_ESP, AccessType::Read),
        Action::Deny
    );

    // 4. Installed: the same outcomes, no exit for a learned MSR; the unknown MSR and one the
    // script never used exit and fail closed (#GP), as a dispatcher without handlers does.
    let mut h = GuestVm::new().unwrap();
    let d = Dispatcher::builder(text_policy.view()).build().unwrap();
    let mut msrs = MsrInterception::new(h.kvm(), h.shared_vm(), MsrExitReason::empty()).unwrap();
    msrs.install(d.filter()).unwrap();
    for (a, want) in script().into_iter().zip(&baseline) {
        let o = h
            .run(a, &mut |exit| {
                d.dispatch(0, exit);
            })
            .unwrap();
        assert_eq!(&seen(a, &o), want, "{a:x?}");
        let index = match a {
            MsrAccess::Read { index } | MsrAccess::Write { index, .. } => index,
        };
        if index != UNKNOWN {
            assert!(o.exit.is_none(), "{a:x?}: a learned MSR exits: {o:?}");
        }
    }
    let o = h
        .run(rd(SYSENTER_ESP), &mut |exit| {
            d.dispatch(0, exit);
        })
        .unwrap();
    assert_eq!(o.exit.map(|e| e.reason), Some(MsrExitReason::Filter));
    assert_eq!(o.result, GuestResult::GeneralProtection);
}

/// What host-initiated forwarding changes: for every MSR KVM lists, a guest read with no filter
/// against the same read forwarded by a learner. Printed for the README; the unknown MSR must
/// fail closed.
#[test]
fn forwarding_matches_the_kernel_for_the_guests_own_accesses() {
    if skip_without_kvm() {
        return;
    }
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let mut msrs = msr_filter_kvm::KvmMsrLists::query(&kvm).unwrap().all();
    msrs.push(UNKNOWN);
    let mut plain = GuestVm::new().unwrap();
    let mut g = GuestVm::new().unwrap();
    let learner = Learner::new();
    let mut interception =
        MsrInterception::new(g.kvm(), g.shared_vm(), MsrExitReason::empty()).unwrap();
    interception.install(learner.filter()).unwrap();
    let mut recorder = learner.vcpu(g.vcpu().fd()).unwrap();
    let mut differ = Vec::new();
    for &index in &msrs {
        let guest = plain.run_raw(rd(index)).unwrap().result;
        let forwarded = g
            .run(rd(index), &mut |exit| {
                recorder.forward(exit);
            })
            .unwrap()
            .result;
        let gp = |r: GuestResult| r == GuestResult::GeneralProtection;
        // Forwarding may be more lenient than the guest's own access (KVM relaxes checks for
        // host-initiated accesses), never stricter: that would change what the guest sees.
        assert!(
            !gp(forwarded) || gp(guest),
            "{index:#x}: the guest's own read succeeds, the forwarded one faults"
        );
        if gp(guest) != gp(forwarded) {
            differ.push(format!(
                "{}: guest {guest:?}, forwarded {forwarded:?}",
                msr_filter_core::names::Label(index)
            ));
        }
    }
    println!(
        "{} MSRs read: {} differ between a guest read and a forwarded one{}{}",
        msrs.len(),
        differ.len(),
        if differ.is_empty() { "" } else { ":\n  " },
        differ.join("\n  ")
    );
    let unknown = g
        .run(rd(UNKNOWN), &mut |exit| {
            recorder.forward(exit);
        })
        .unwrap();
    assert_eq!(unknown.result, GuestResult::GeneralProtection);
}
