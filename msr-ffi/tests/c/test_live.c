/* Live replacement through msr_filter_live_*: NULLs everywhere; on the real /dev/kvm, install,
 * dispatch before and after a replacement, epochs and reclaiming, statistics, teardown. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "check.h"

static int read_opaque(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)vcpu;
    (void)index;
    *value = *(const uint64_t *)opaque;
    return 0;
}

static const uint64_t OLD = 1, NEW = 2;

static msr_filter_dispatcher *dispatcher(const uint64_t *value, const char *text) {
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_policy_parse(text, strlen(text), &p, NULL, NULL));
    msr_filter_dispatcher_builder *b = NULL;
    CHECK_OK(msr_filter_dispatcher_builder_new(p, &b));
    CHECK_OK(msr_filter_dispatcher_builder_add_handler(b, 0x35, 0x35, MSR_FILTER_ACCESS_READ, read_opaque, NULL,
                                                       (void *)value));
    msr_filter_dispatcher *d = NULL;
    CHECK_OK(msr_filter_dispatcher_builder_build(b, &d));
    msr_filter_dispatcher_builder_free(b);
    msr_filter_policy_free(p);
    return d;
}

static void nulls(void) {
    const msr_filter_status NUL = MSR_FILTER_STATUS_NULL_ARGUMENT;
    msr_filter_live *live = (msr_filter_live *)1;
    CHECK_STATUS(msr_filter_live_new(NULL, 1, NULL, &live), NUL);
    CHECK(live == NULL);
    CHECK_STATUS(msr_filter_live_new(NULL, 1, NULL, NULL), NUL);
    CHECK_STATUS(msr_filter_live_enter_run(NULL, 0), NUL);
    CHECK_STATUS(msr_filter_live_leave_run(NULL, 0), NUL);
    struct kvm_run run;
    memset(&run, 0, sizeof run);
    CHECK_STATUS(msr_filter_live_dispatch_run(NULL, 0, &run, NULL), NUL);
    unsigned long long data = 0;
    uint8_t error = 0;
    CHECK_STATUS(msr_filter_live_dispatch_msr(NULL, 0, false, 4, 0x35, &data, &error, NULL), NUL);
    CHECK(error == 1);
    CHECK_STATUS(msr_filter_live_replace(NULL, NULL, NULL), NUL);
    uint64_t g;
    size_t n;
    msr_filter_handler_stats hs;
    msr_filter_route_stats rs;
    CHECK_STATUS(msr_filter_live_generation(NULL, &g), NUL);
    CHECK_STATUS(msr_filter_live_reclaim(NULL, &n), NUL);
    CHECK_STATUS(msr_filter_live_handler_count(NULL, &n), NUL);
    CHECK_STATUS(msr_filter_live_handler_stats(NULL, 0, &hs), NUL);
    CHECK_STATUS(msr_filter_live_route_stats(NULL, &rs), NUL);
    CHECK_STATUS(msr_filter_live_shutdown(NULL), NUL);
    msr_filter_live_free(NULL);
}

static uint64_t read_35(const msr_filter_live *live, uint32_t vcpu) {
    unsigned long long data = 0;
    uint8_t error = 1;
    msr_filter_outcome o;
    CHECK_OK(msr_filter_live_dispatch_msr(live, vcpu, false, MSR_FILTER_EXIT_REASON_FILTER, 0x35, &data, &error, &o));
    CHECK(o == MSR_FILTER_OUTCOME_COMPLETED && error == 0);
    return data;
}

static void on_the_kernel(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("SKIPPED: no /dev/kvm (test_live ran its NULL checks only)\n");
        return;
    }
    int vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(vm_fd >= 0);
    msr_filter_vm *vm = NULL;
    CHECK_OK(msr_filter_vm_new(vm_fd, 0, &vm));
    msr_filter_dispatcher *first = dispatcher(&OLD, "default allow\ndeny rw 0x474f4f00\n");
    msr_filter_live *live = NULL;
    CHECK_STATUS(msr_filter_live_new(vm, 2, first, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_OK(msr_filter_live_new(vm, 2, first, &live)); /* vm and first now belong to live */
    uint64_t generation = 0;
    CHECK_OK(msr_filter_live_generation(live, &generation));
    CHECK(generation == 1);

    CHECK_OK(msr_filter_live_enter_run(live, 0));
    CHECK_OK(msr_filter_live_enter_run(live, 1));
    CHECK_STATUS(msr_filter_live_enter_run(live, 2), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_live_leave_run(live, 2), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK(read_35(live, 0) == OLD);

    /* Replace while "vCPU 0 is in KVM_RUN" (it entered before the replacement). */
    CHECK_OK(msr_filter_live_replace(live, dispatcher(&NEW, "default allow\n"), &generation));
    CHECK(generation == 2);
    CHECK_STATUS(msr_filter_live_replace(live, NULL, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    /* Both dispatchers handle 0x35: the newer one serves, even for an exit of the old filter. */
    CHECK(read_35(live, 0) == NEW);
    /* 0x474f4f00 is no longer denied, but an exit the old filter produced may still come: no
     * dispatcher handles it, so the installed one's route serves it (#GP), never lost. */
    unsigned long long data = 5;
    uint8_t error = 0;
    msr_filter_outcome o;
    CHECK_OK(msr_filter_live_dispatch_msr(live, 1, false, MSR_FILTER_EXIT_REASON_FILTER, 0x474f4f00, &data, &error,
                                          &o));
    CHECK(o == MSR_FILTER_OUTCOME_GP && error == 1 && data == 0);
    /* A vCPU number out of range gets #GP. */
    CHECK_OK(msr_filter_live_dispatch_msr(live, 7, false, MSR_FILTER_EXIT_REASON_FILTER, 0x35, &data, &error, &o));
    CHECK(o == MSR_FILTER_OUTCOME_GP && error == 1);

    /* The retired dispatcher is freed once both vCPUs passed a quiescent point. */
    size_t retired = 99;
    CHECK_OK(msr_filter_live_reclaim(live, &retired));
    CHECK_OK(msr_filter_live_enter_run(live, 0));
    CHECK_OK(msr_filter_live_leave_run(live, 1));
    CHECK_OK(msr_filter_live_reclaim(live, &retired));
    CHECK(retired == 0);
    CHECK_OK(msr_filter_live_reclaim(live, NULL));

    /* The kvm_run form. */
    struct kvm_run *run = calloc(1, sizeof *run);
    CHECK(run != NULL);
    run->exit_reason = KVM_EXIT_X86_RDMSR;
    run->msr.reason = KVM_MSR_EXIT_REASON_FILTER;
    run->msr.index = 0x35;
    CHECK_OK(msr_filter_live_dispatch_run(live, 0, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_COMPLETED && run->msr.data == NEW && run->msr.error == 0);
    run->exit_reason = KVM_EXIT_HLT;
    CHECK_OK(msr_filter_live_dispatch_run(live, 0, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_NOT_MSR);
    CHECK_STATUS(msr_filter_live_dispatch_run(live, 0, NULL, &o), MSR_FILTER_STATUS_NULL_ARGUMENT);
    free(run);

    /* Statistics of the installed dispatcher: 2 reads of 0x35 since it was built. */
    size_t n = 0;
    CHECK_OK(msr_filter_live_handler_count(live, &n));
    CHECK(n == 1);
    msr_filter_handler_stats hs;
    CHECK_OK(msr_filter_live_handler_stats(live, 0, &hs));
    CHECK(hs.first == 0x35 && hs.reads == 2);
    CHECK_STATUS(msr_filter_live_handler_stats(live, 1, &hs), MSR_FILTER_STATUS_OUT_OF_RANGE);
    CHECK_STATUS(msr_filter_live_handler_stats(live, 0, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    msr_filter_route_stats rs;
    CHECK_OK(msr_filter_live_route_stats(live, &rs));
    CHECK(rs.unhandled == 1 && rs.faults == 1);
    CHECK_STATUS(msr_filter_live_route_stats(live, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_live_generation(live, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_live_handler_count(live, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);

    CHECK_OK(msr_filter_live_shutdown(live));

    /* Freed without a shutdown. */
    CHECK_OK(msr_filter_vm_new(vm_fd, 0, &vm));
    CHECK_OK(msr_filter_live_new(vm, 1, dispatcher(&OLD, "default allow\n"), &live));
    msr_filter_live_free(live);
    close(vm_fd);
    close(kvm);
    printf("test_live: ran on the real /dev/kvm\n");
}

int main(void) {
    nulls();
    on_the_kernel();
    DONE("test_live");
}
