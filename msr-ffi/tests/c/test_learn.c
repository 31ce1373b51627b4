/* Learning mode through msr_filter_learner_* and msr_filter_learned_*: NULLs everywhere; on the
 * real /dev/kvm, a recorder on a real vCPU forwards reads and writes to KVM, an MSR KVM does not
 * know stays #GP, and the learned allow-list allows exactly what KVM completed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "check.h"

static void nulls(void) {
    const msr_filter_status NUL = MSR_FILTER_STATUS_NULL_ARGUMENT;
    CHECK_STATUS(msr_filter_learner_new(NULL), NUL);
    msr_filter_filter *f = (msr_filter_filter *)1;
    CHECK_STATUS(msr_filter_learner_filter(NULL, &f), NUL);
    msr_filter_learner_vcpu *v = (msr_filter_learner_vcpu *)1;
    CHECK_STATUS(msr_filter_learner_vcpu_new(NULL, 0, &v), NUL);
    CHECK_STATUS(msr_filter_learner_vcpu_forward_run(NULL, NULL, NULL), NUL);
    unsigned long long data = 0;
    uint8_t error = 0;
    CHECK_STATUS(msr_filter_learner_vcpu_forward_msr(NULL, false, 4, 0x10, &data, &error, NULL), NUL);
    CHECK(error == 1); /* failed closed before the NULL was found */
    CHECK_STATUS(msr_filter_learned_new(NULL), NUL);
    CHECK_STATUS(msr_filter_learned_merge(NULL, NULL), NUL);
    msr_filter_policy *p = (msr_filter_policy *)1;
    CHECK_STATUS(msr_filter_learned_policy(NULL, &p), NUL);
    size_t n = 0;
    CHECK_STATUS(msr_filter_learned_policy_text(NULL, NULL, 0, &n), NUL);
    msr_filter_learner_free(NULL);
    msr_filter_learner_vcpu_free(NULL);
    msr_filter_learned_free(NULL);

    msr_filter_learner *learner = NULL;
    CHECK_OK(msr_filter_learner_new(&learner));
    CHECK_STATUS(msr_filter_learner_vcpu_new(learner, -1, &v), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK(v == NULL);
    CHECK_STATUS(msr_filter_learner_vcpu_new(learner, 0, NULL), NUL);
    /* The learning filter denies everything but the x2APIC MSRs. */
    CHECK_OK(msr_filter_learner_filter(learner, &f));
    msr_filter_action a;
    CHECK_OK(msr_filter_filter_decide(f, 0x10, MSR_FILTER_ACCESS_READ, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    CHECK_OK(msr_filter_filter_decide(f, 0x808, MSR_FILTER_ACCESS_WRITE, &a));
    CHECK(a == MSR_FILTER_ACTION_ALLOW);
    msr_filter_filter_free(f);
    msr_filter_learned *learned = NULL;
    CHECK_OK(msr_filter_learned_new(&learned));
    CHECK_STATUS(msr_filter_learned_policy_text(learned, NULL, 1, &n), NUL);
    CHECK_STATUS(msr_filter_learned_policy_text(learned, NULL, 0, NULL), NUL);
    msr_filter_learned_free(learned);
    msr_filter_learner_free(learner);
}

static msr_filter_outcome forward(msr_filter_learner_vcpu *v, bool write, uint32_t index,
                                  unsigned long long *data) {
    uint8_t error = 0;
    msr_filter_outcome o;
    CHECK_OK(msr_filter_learner_vcpu_forward_msr(v, write, MSR_FILTER_EXIT_REASON_FILTER, index, data, &error, &o));
    CHECK((o == MSR_FILTER_OUTCOME_GP) == (error == 1));
    return o;
}

static void on_the_kernel(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("SKIPPED: no /dev/kvm (test_learn ran its NULL checks only)\n");
        return;
    }
    int vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(vm_fd >= 0);
    int vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
    CHECK(vcpu_fd >= 0);
    msr_filter_learner *learner = NULL;
    CHECK_OK(msr_filter_learner_new(&learner));
    msr_filter_learner_vcpu *v = NULL;
    CHECK_OK(msr_filter_learner_vcpu_new(learner, vcpu_fd, &v));

    /* SYSENTER_CS (0x174): written, then read back, through KVM on this vCPU. */
    unsigned long long data = 0x10;
    CHECK(forward(v, true, 0x174, &data) == MSR_FILTER_OUTCOME_COMPLETED);
    data = 0;
    CHECK(forward(v, false, 0x174, &data) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(data == 0x10);
    /* An MSR KVM does not know stays #GP, and a read of it gives 0. */
    data = 99;
    CHECK(forward(v, false, 0x474f4f00, &data) == MSR_FILTER_OUTCOME_GP);
    CHECK(data == 0);
    /* The kvm_run form. */
    struct kvm_run *run = calloc(1, sizeof *run);
    CHECK(run != NULL);
    run->exit_reason = KVM_EXIT_X86_RDMSR;
    run->msr.reason = KVM_MSR_EXIT_REASON_FILTER;
    run->msr.index = 0x174;
    msr_filter_outcome o;
    CHECK_OK(msr_filter_learner_vcpu_forward_run(v, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_COMPLETED && run->msr.data == 0x10 && run->msr.error == 0);
    run->exit_reason = KVM_EXIT_HLT;
    CHECK_OK(msr_filter_learner_vcpu_forward_run(v, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_NOT_MSR);
    free(run);

    /* The learned allow-list: SYSENTER_CS read and written; the unknown MSR stays denied. */
    msr_filter_learned *learned = NULL;
    CHECK_OK(msr_filter_learned_new(&learned));
    CHECK_OK(msr_filter_learned_merge(learned, v));
    size_t len = 0;
    /* Asking with no buffer gives the length (and BUFFER_TOO_SMALL, as nothing was copied). */
    CHECK_STATUS(msr_filter_learned_policy_text(learned, NULL, 0, &len), MSR_FILTER_STATUS_BUFFER_TOO_SMALL);
    CHECK(len > 20);
    char small[8];
    CHECK_STATUS(msr_filter_learned_policy_text(learned, small, sizeof small, &len),
                 MSR_FILTER_STATUS_BUFFER_TOO_SMALL);
    CHECK(small[7] == 0);
    char *text = malloc(len + 1);
    CHECK(text != NULL);
    size_t got = 0;
    CHECK_OK(msr_filter_learned_policy_text(learned, text, len + 1, &got));
    CHECK(got == len && strlen(text) == len);
    CHECK(strstr(text, "default deny\n") != NULL);
    CHECK(strstr(text, "allow rw 0x174  # IA32_SYSENTER_CS, 2 reads, 1 writes") != NULL);
    CHECK(strstr(text, "0x474f4f00") == NULL);
    free(text);
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_learned_policy(learned, &p));
    msr_filter_action a;
    CHECK_OK(msr_filter_policy_decide(p, 0x174, MSR_FILTER_ACCESS_WRITE, &a));
    CHECK(a == MSR_FILTER_ACTION_ALLOW);
    CHECK_OK(msr_filter_policy_decide(p, 0x474f4f00, MSR_FILTER_ACCESS_READ, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    msr_filter_policy_free(p);

    msr_filter_learned_free(learned);
    msr_filter_learner_vcpu_free(v);
    msr_filter_learner_free(learner);
    close(vcpu_fd);
    close(vm_fd);
    close(kvm);
    printf("test_learn: ran on the real /dev/kvm\n");
}

int main(void) {
    nulls();
    on_the_kernel();
    DONE("test_learn");
}
