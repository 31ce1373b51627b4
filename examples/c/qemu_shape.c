/* qemu_shape: msr-filter in a VMM that keeps its own KVM code, as QEMU does.
 *
 * The VMM enables user-space MSR exits and sets the filter with its own ioctls, using only the
 * library's exported `struct kvm_msr_filter`; its own exit loop completes MSR exits with
 * msr_filter_dispatcher_dispatch_msr, passing the fields of kvm_run's msr member. One vCPU.
 *
 *   cc -std=c11 -I msr-ffi/include examples/c/qemu_shape.c -o qemu_shape \
 *      target/release/libmsr_filter_ffi.a -lpthread -ldl -lm -lgcc_s -lrt -lutil
 */
#define _GNU_SOURCE
#define EXAMPLE_NAME "qemu_shape"
#include <assert.h>
#include <stddef.h>

#include "guest.h"
#include "msr_filter.h"

/* The library's struct is the kernel's. */
static_assert(sizeof(msr_filter_kvm_msr_filter) == sizeof(struct kvm_msr_filter), "same layout");
static_assert(offsetof(msr_filter_kvm_msr_filter, ranges) == offsetof(struct kvm_msr_filter, ranges), "same layout");

#define MSR_CORE_THREAD_COUNT 0x35u
#define MSR_RAPL_POWER_UNIT 0x606u

static int read_core_thread_count(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)opaque;
    (void)vcpu;
    (void)index;
    *value = 0x00010001;
    return 0;
}

static int read_rapl_power_unit(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)vcpu;
    (void)index;
    *value = *(const uint64_t *)opaque;
    return 0;
}

static void check(msr_filter_status status, const char *what) {
    if (status != MSR_FILTER_STATUS_OK) {
        char message[512];
        size_t len = 0;
        msr_filter_last_error_message(message, sizeof message, &len);
        DIE("%s: %s: %s", what, msr_filter_status_name(status), message);
    }
}

int main(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("qemu_shape: no /dev/kvm (%s)\n", strerror(errno));
        return 2;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        DIE("KVM_CREATE_VM: %s", strerror(errno));
    }
    uint8_t *mem = guest_memory(vm);
    struct code c = {mem + GUEST_CODE};
    emit_rdmsr_report(&c, MSR_CORE_THREAD_COUNT);
    emit_rdmsr_report(&c, MSR_RAPL_POWER_UNIT);
    emit_wrmsr_ebx(&c, MSR_RAPL_POWER_UNIT); /* read-only: #GP */

    /* The library: a policy, handlers, the filter. Handled reads exit to the callbacks; writes of
     * RAPL_POWER_UNIT are denied by the policy, so they exit too, and nobody takes them: #GP. */
    static const char policy_text[] = "default allow\ndeny w 0x606   # RAPL_POWER_UNIT is read-only\n";
    msr_filter_policy *policy = NULL;
    check(msr_filter_policy_parse(policy_text, strlen(policy_text), &policy, NULL, NULL), "parse");
    msr_filter_dispatcher_builder *builder = NULL;
    check(msr_filter_dispatcher_builder_new(policy, &builder), "builder");
    static const uint64_t rapl_units = 0x000a0e03;
    check(msr_filter_dispatcher_builder_add_handler(builder, MSR_CORE_THREAD_COUNT, MSR_CORE_THREAD_COUNT,
                                                    MSR_FILTER_ACCESS_READ, read_core_thread_count, NULL, NULL),
          "add");
    check(msr_filter_dispatcher_builder_add_handler(builder, MSR_RAPL_POWER_UNIT, MSR_RAPL_POWER_UNIT,
                                                    MSR_FILTER_ACCESS_READ, read_rapl_power_unit, NULL,
                                                    (void *)&rapl_units),
          "add");
    msr_filter_dispatcher *dispatcher = NULL;
    check(msr_filter_dispatcher_builder_build(builder, &dispatcher), "build");
    msr_filter_dispatcher_builder_free(builder);
    msr_filter_policy_free(policy);
    msr_filter_filter *filter = NULL;
    check(msr_filter_dispatcher_filter(dispatcher, &filter), "filter");
    const msr_filter_kvm_msr_filter *kvm_filter = NULL;
    check(msr_filter_filter_kvm_msr_filter(filter, &kvm_filter), "export");

    /* The VMM's own ioctls, in the order the kernel needs: exits first, then the filter. */
    struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR};
    cap.args[0] = KVM_MSR_EXIT_REASON_FILTER;
    if (ioctl(vm, KVM_ENABLE_CAP, &cap) < 0) {
        DIE("KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR): %s", strerror(errno));
    }
    if (ioctl(vm, KVM_X86_SET_MSR_FILTER, kvm_filter) < 0) {
        DIE("KVM_X86_SET_MSR_FILTER: %s", strerror(errno));
    }
    msr_filter_filter_free(filter); /* the kernel copied it */
    printf("filter set by the VMM's own ioctl\n");

    struct kvm_run *run = NULL;
    int vcpu = guest_vcpu(kvm, vm, 0, 0x1234, &run);
    uint32_t values[2] = {0, 0};
    unsigned nvalues = 0, gps = 0, exits = 0;
    for (bool done = false; !done;) {
        guest_run(vcpu);
        switch (run->exit_reason) {
        case KVM_EXIT_X86_RDMSR:
        case KVM_EXIT_X86_WRMSR: {
            /* QEMU's kvm_handle_rdmsr/wrmsr, with the lookup done by the library. */
            msr_filter_outcome outcome;
            check(msr_filter_dispatcher_dispatch_msr(dispatcher, 0, run->exit_reason == KVM_EXIT_X86_WRMSR,
                                                     run->msr.reason, run->msr.index, &run->msr.data,
                                                     &run->msr.error, &outcome),
                  "dispatch");
            printf("%s %#x: %s\n", run->exit_reason == KVM_EXIT_X86_WRMSR ? "wrmsr" : "rdmsr", run->msr.index,
                   outcome == MSR_FILTER_OUTCOME_GP ? "#GP" : "completed");
            exits++;
            break;
        }
        case KVM_EXIT_IO:
            if (run->io.port == PORT_VALUE && nvalues < 2) {
                values[nvalues++] = io_value(run);
            } else if (run->io.port == PORT_GP) {
                gps++;
            } else {
                DIE("unexpected port %#x", run->io.port);
            }
            break;
        case KVM_EXIT_HLT:
            done = true;
            break;
        default:
            DIE("unexpected exit %u", run->exit_reason);
        }
    }
    printf("guest read CORE_THREAD_COUNT = %#x, RAPL_POWER_UNIT = %#x; its write took #GP %u time(s)\n", values[0],
           values[1], gps);
    bool ok = exits == 3 && nvalues == 2 && values[0] == 0x00010001 && values[1] == rapl_units && gps == 1;

    msr_filter_dispatcher_free(dispatcher);
    close(vcpu);
    close(vm);
    close(kvm);
    printf("%s\n", ok ? "qemu_shape: ok" : "qemu_shape: FAILED");
    return ok ? 0 : 1;
}
