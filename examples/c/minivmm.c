/* minivmm: a small C VMM on raw KVM ioctls that uses msr-filter for its MSRs.
 *
 * Two vCPU threads run 16-bit real-mode guests that read and write MSRs. The library installs
 * the policy on the VM (user-space MSR exits first, then the filter), and the vCPU threads hand
 * every exit to one shared dispatcher, which calls the C callbacks below, concurrently.
 *
 *   cc -std=c11 -I msr-ffi/include examples/c/minivmm.c -o minivmm \
 *      target/release/libmsr_filter_ffi.a -lpthread -ldl -lm -lgcc_s -lrt -lutil
 *   ./minivmm
 */
#define _GNU_SOURCE
#define EXAMPLE_NAME "minivmm"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "guest.h"
#include "msr_filter.h"

#define VCPUS 2
#define MSR_CORE_THREAD_COUNT 0x35u
#define SHADOW_FIRST 0xabcd0000u /* made-up MSRs, emulated per vCPU */
#define SHADOW_LAST 0xabcd00ffu
#define FORBIDDEN 0x474f4f00u /* denied by the policy, no handler: #GP */
#define LOOP_READS 1000

static const char POLICY[] = "default allow\n"
                             "deny rw 0x474f4f00   # a fabricated MSR nobody emulates\n";

/* --- The C callbacks. They run on vCPU threads, both at once: state is per vCPU or atomic. */

static atomic_ulong thread_count_reads;

static int read_core_thread_count(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)opaque;
    (void)vcpu;
    (void)index;
    atomic_fetch_add(&thread_count_reads, 1);
    *value = (1u << 16) | VCPUS; /* 1 core, 2 threads */
    return 0;
}

struct shadow {
    uint64_t regs[VCPUS][SHADOW_LAST - SHADOW_FIRST + 1];
};

static int shadow_read(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    struct shadow *s = opaque;
    if (vcpu >= VCPUS) {
        return 1;
    }
    *value = s->regs[vcpu][index - SHADOW_FIRST];
    return 0;
}

static int shadow_write(void *opaque, uint32_t vcpu, uint32_t index, uint64_t value) {
    struct shadow *s = opaque;
    if (vcpu >= VCPUS) {
        return 1; /* #GP */
    }
    s->regs[vcpu][index - SHADOW_FIRST] = value;
    return 0;
}

/* --- Library calls, checked. */

static void check(msr_filter_status status, const char *what) {
    if (status != MSR_FILTER_STATUS_OK) {
        char message[512];
        size_t len = 0;
        msr_filter_last_error_message(message, sizeof message, &len);
        DIE("%s: %s: %s", what, msr_filter_status_name(status), message);
    }
}

/* --- vCPU threads. */

struct vcpu {
    unsigned id;
    int fd;
    struct kvm_run *run;
    const msr_filter_dispatcher *dispatcher;
    /* What the guest reported, in order. */
    uint32_t values[4];
    unsigned nvalues;
    unsigned gps;
    unsigned msr_exits;
};

static void *vcpu_thread(void *arg) {
    struct vcpu *v = arg;
    for (;;) {
        guest_run(v->fd);
        struct kvm_run *run = v->run;
        switch (run->exit_reason) {
        case KVM_EXIT_X86_RDMSR:
        case KVM_EXIT_X86_WRMSR: {
            msr_filter_outcome outcome;
            check(msr_filter_dispatcher_dispatch_run(v->dispatcher, v->id, run, &outcome), "dispatch");
            v->msr_exits++;
            break;
        }
        case KVM_EXIT_IO:
            if (run->io.direction != KVM_EXIT_IO_OUT) {
                DIE("vCPU %u: unexpected port read", v->id);
            }
            if (run->io.port == PORT_VALUE && v->nvalues < 4) {
                v->values[v->nvalues++] = io_value(run);
            } else if (run->io.port == PORT_GP) {
                v->gps++;
            } else {
                DIE("vCPU %u: unexpected exception reported on port %#x", v->id, run->io.port);
            }
            break;
        case KVM_EXIT_HLT:
            return NULL;
        default:
            DIE("vCPU %u: unexpected exit %u", v->id, run->exit_reason);
        }
    }
}

int main(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("minivmm: no /dev/kvm (%s)\n", strerror(errno));
        return 2;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        DIE("KVM_CREATE_VM: %s", strerror(errno));
    }
    uint8_t *mem = guest_memory(vm);

    /* The guest: read CORE_THREAD_COUNT; write its ebx to a shadow MSR and read it back; read an
     * MSR the policy denies (#GP, skipped by the guest's handler); then LOOP_READS more reads of
     * CORE_THREAD_COUNT; hlt. */
    struct code c = {mem + GUEST_CODE};
    emit_rdmsr_report(&c, MSR_CORE_THREAD_COUNT);
    emit_wrmsr_ebx(&c, SHADOW_FIRST + 0x10);
    emit_rdmsr_report(&c, SHADOW_FIRST + 0x10);
    emit_rdmsr(&c, FORBIDDEN);
    emit_rdmsr_loop(&c, MSR_CORE_THREAD_COUNT, LOOP_READS);

    /* The policy, and a dispatcher whose callbacks intercept what they handle. */
    msr_filter_policy *policy = NULL;
    uint32_t line = 0, column = 0;
    check(msr_filter_policy_parse(POLICY, strlen(POLICY), &policy, &line, &column), "parse");
    msr_filter_dispatcher_builder *builder = NULL;
    check(msr_filter_dispatcher_builder_new(policy, &builder), "builder");
    static struct shadow shadow;
    check(msr_filter_dispatcher_builder_add_handler(builder, MSR_CORE_THREAD_COUNT, MSR_CORE_THREAD_COUNT,
                                                    MSR_FILTER_ACCESS_READ, read_core_thread_count, NULL, NULL),
          "add CORE_THREAD_COUNT");
    check(msr_filter_dispatcher_builder_add_handler(builder, SHADOW_FIRST, SHADOW_LAST, MSR_FILTER_ACCESS_READ_WRITE,
                                                    shadow_read, shadow_write, &shadow),
          "add shadow MSRs");
    msr_filter_dispatcher *dispatcher = NULL;
    check(msr_filter_dispatcher_builder_build(builder, &dispatcher), "build");
    msr_filter_dispatcher_builder_free(builder);
    msr_filter_policy_free(policy);

    /* Install on the VM: exits first, then the filter (the library enforces the order). */
    msr_filter_filter *filter = NULL;
    check(msr_filter_dispatcher_filter(dispatcher, &filter), "filter");
    size_t ranges = 0;
    check(msr_filter_filter_range_count(filter, &ranges), "range count");
    msr_filter_vm *interception = NULL;
    check(msr_filter_vm_new(vm, 0, &interception), "vm");
    check(msr_filter_vm_install(interception, filter), "install");
    printf("installed: a filter of %zu ranges (the policy plus the handled MSRs)\n", ranges);
    msr_filter_filter_free(filter);

    struct vcpu vcpus[VCPUS];
    pthread_t threads[VCPUS];
    for (unsigned i = 0; i < VCPUS; i++) {
        vcpus[i] = (struct vcpu){.id = i, .dispatcher = dispatcher};
        vcpus[i].fd = guest_vcpu(kvm, vm, i, 0x1000 * (i + 1) + 0x234, &vcpus[i].run);
    }
    for (unsigned i = 0; i < VCPUS; i++) {
        if (pthread_create(&threads[i], NULL, vcpu_thread, &vcpus[i]) != 0) {
            DIE("pthread_create");
        }
    }
    for (unsigned i = 0; i < VCPUS; i++) {
        pthread_join(threads[i], NULL);
    }

    bool ok = true;
    for (unsigned i = 0; i < VCPUS; i++) {
        struct vcpu *v = &vcpus[i];
        uint32_t written = 0x1000 * (i + 1) + 0x234;
        printf("vcpu %u: rdmsr CORE_THREAD_COUNT = %#x (C callback)\n", i, v->nvalues > 0 ? v->values[0] : 0);
        printf("vcpu %u: wrmsr %#x = %#x, rdmsr back = %#x (per-vCPU shadow)\n", i, SHADOW_FIRST + 0x10, written,
               v->nvalues > 1 ? v->values[1] : 0);
        printf("vcpu %u: rdmsr %#x: %s\n", i, FORBIDDEN,
               v->gps == 1 ? "#GP (denied by the policy, no handler: fails closed)" : "NO #GP");
        printf("vcpu %u: %u MSR exits dispatched\n", i, v->msr_exits);
        ok = ok && v->nvalues == 2 && v->values[0] == ((1u << 16) | VCPUS) && v->values[1] == written &&
             v->gps == 1 && v->msr_exits == 4 + LOOP_READS;
    }

    /* Statistics, from C. */
    size_t handlers = 0;
    check(msr_filter_dispatcher_handler_count(dispatcher, &handlers), "handler count");
    for (size_t i = 0; i < handlers; i++) {
        msr_filter_handler_stats s;
        check(msr_filter_dispatcher_handler_stats(dispatcher, i, &s), "handler stats");
        printf("handler %#x-%#x: %llu reads, %llu writes, %llu faults\n", s.first, s.last,
               (unsigned long long)s.reads, (unsigned long long)s.writes, (unsigned long long)s.faults);
    }
    msr_filter_route_stats routes;
    check(msr_filter_dispatcher_route_stats(dispatcher, &routes), "route stats");
    printf("unhandled FILTER exits: %llu, of which #GP: %llu\n", (unsigned long long)routes.unhandled,
           (unsigned long long)routes.faults);
    ok = ok && atomic_load(&thread_count_reads) == VCPUS * (1 + LOOP_READS) && routes.unhandled == VCPUS;

    /* Teardown: filter first, then the exits; the VM fd stays ours. */
    check(msr_filter_vm_shutdown(interception), "shutdown");
    msr_filter_dispatcher_free(dispatcher);
    for (unsigned i = 0; i < VCPUS; i++) {
        close(vcpus[i].fd);
    }
    close(vm);
    close(kvm);
    printf("%s\n", ok ? "minivmm: ok" : "minivmm: FAILED");
    return ok ? 0 : 1;
}
