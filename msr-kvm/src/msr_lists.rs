//! The MSRs this host's KVM supports, as the kernel lists them: the raw material of allow-list
//! policies (`msrfilter from-kvm`).

use kvm_ioctls::Kvm;

use crate::intercept::KvmError;

/// The MSR lists of `/dev/kvm`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvmMsrLists {
    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM saves and restores for a guest, and those it
    /// emulates.
    pub index: Vec<u32>,
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST`: the feature MSRs (their values describe the host's
    /// capabilities; a guest reads them too).
    pub features: Vec<u32>,
}

impl KvmMsrLists {
    /// Asks the kernel for both lists.
    pub fn query(kvm: &Kvm) -> Result<KvmMsrLists, KvmError> {
        let index = kvm
            .get_msr_index_list()
            .map_err(|err| KvmError::Ioctl {
                what: "KVM_GET_MSR_INDEX_LIST",
                err,
            })?
            .as_slice()
            .to_vec();
        let features = kvm
            .get_msr_feature_index_list()
            .map_err(|err| KvmError::Ioctl {
                what: "KVM_GET_MSR_FEATURE_INDEX_LIST",
                err,
            })?
            .as_slice()
            .to_vec();
        Ok(KvmMsrLists { index, features })
    }

    /// Every MSR of both lists, sorted, each once.
    pub fn all(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.index.iter().chain(&self.features).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}
