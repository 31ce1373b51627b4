/* The exported filter is struct kvm_msr_filter: same size, same field offsets.
 * Compiled (not run) by tests/header.rs as C11 and as C++17. */
#include <assert.h>
#include <stddef.h>
#include <linux/kvm.h>

#include "msr_filter.h"

#define SAME_FIELD(ours, theirs, field) \
    static_assert(offsetof(ours, field) == offsetof(theirs, field), #field " at the kernel's offset"); \
    static_assert(sizeof(((ours *)0)->field) == sizeof(((theirs *)0)->field), #field " of the kernel's size")

static_assert(sizeof(msr_filter_kvm_msr_filter) == sizeof(struct kvm_msr_filter), "filter size");
SAME_FIELD(msr_filter_kvm_msr_filter, struct kvm_msr_filter, flags);
SAME_FIELD(msr_filter_kvm_msr_filter, struct kvm_msr_filter, ranges);
SAME_FIELD(msr_filter_kvm_msr_filter, struct kvm_msr_filter, ranges[15]);

static_assert(sizeof(msr_filter_kvm_msr_filter_range) == sizeof(struct kvm_msr_filter_range), "range size");
SAME_FIELD(msr_filter_kvm_msr_filter_range, struct kvm_msr_filter_range, flags);
SAME_FIELD(msr_filter_kvm_msr_filter_range, struct kvm_msr_filter_range, nmsrs);
SAME_FIELD(msr_filter_kvm_msr_filter_range, struct kvm_msr_filter_range, base);
SAME_FIELD(msr_filter_kvm_msr_filter_range, struct kvm_msr_filter_range, bitmap);

static_assert(MSR_FILTER_MAX_RANGES == KVM_MSR_FILTER_MAX_RANGES, "16 ranges");
static_assert(MSR_FILTER_ACCESS_READ == KVM_MSR_FILTER_READ, "read flag");
static_assert(MSR_FILTER_ACCESS_WRITE == KVM_MSR_FILTER_WRITE, "write flag");
static_assert(MSR_FILTER_ACTION_DENY == KVM_MSR_FILTER_DEFAULT_DENY, "default deny flag");
static_assert(MSR_FILTER_EXIT_REASON_INVAL == KVM_MSR_EXIT_REASON_INVAL, "INVAL");
static_assert(MSR_FILTER_EXIT_REASON_UNKNOWN == KVM_MSR_EXIT_REASON_UNKNOWN, "UNKNOWN");
static_assert(MSR_FILTER_EXIT_REASON_FILTER == KVM_MSR_EXIT_REASON_FILTER, "FILTER");
static_assert(MSR_FILTER_KVM_EXIT_X86_RDMSR == KVM_EXIT_X86_RDMSR, "RDMSR exit");
static_assert(MSR_FILTER_KVM_EXIT_X86_WRMSR == KVM_EXIT_X86_WRMSR, "WRMSR exit");
