/* minivmm: a small C VMM on raw KVM ioctls that uses msr-filter for its MSRs.
 *
 * Two vCPU threads run 16-bit real-mode guests that read and write MSRs. The library installs
 * the policy on the VM (user-space MSR exits first, then the filter), and the vCPU threads hand
 * every exit to one shared live dispatcher, which calls the C callbacks below, concurrently.
 * Half-way, the VMM replaces the policy and its handlers while the vCPU threads live (once at a
 * checkpoint, once while they loop), through the library's live-swap protocol.
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
#define PORT_CHECKPOINT 0x30

static const char POLICY[] = "default allow\n"
                             "deny rw 0x474f4f00   # a fabricated MSR nobody emulates\n";
static const char POLICY_AFTER[] = "default allow\n";

/* --- The C callbacks. They run on vCPU threads, both at once: state is per vCPU or atomic. */

/* CORE_THREAD_COUNT: the value in `opaque` (cores << 16 | threads), reads counted. */
struct thread_count {
    uint64_t value;
    atomic_ulong reads;
};

static int read_core_thread_count(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    struct thread_count *t = opaque;
    (void)vcpu;
    (void)index;
    atomic_fetch_add(&t->reads, 1);
    *value = t->value;
    return 0;
}

/* After the replacement, the formerly forbidden MSR reads as a constant. */
static int read_good(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)opaque;
    (void)vcpu;
    (void)index;
    *value = 0x600d;
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

/* A dispatcher: the policy plus the handlers (with `good`, one for FORBIDDEN too). */
static msr_filter_dispatcher *dispatcher(const char *policy_text, struct thread_count *tc, struct shadow *shadow,
                                         bool good) {
    msr_filter_policy *policy = NULL;
    uint32_t line = 0, column = 0;
    check(msr_filter_policy_parse(policy_text, strlen(policy_text), &policy, &line, &column), "parse");
    msr_filter_dispatcher_builder *builder = NULL;
    check(msr_filter_dispatcher_builder_new(policy, &builder), "builder");
    check(msr_filter_dispatcher_builder_add_handler(builder, MSR_CORE_THREAD_COUNT, MSR_CORE_THREAD_COUNT,
                                                    MSR_FILTER_ACCESS_READ, read_core_thread_count, NULL, tc),
          "add CORE_THREAD_COUNT");
    check(msr_filter_dispatcher_builder_add_handler(builder, SHADOW_FIRST, SHADOW_LAST, MSR_FILTER_ACCESS_READ_WRITE,
                                                    shadow_read, shadow_write, shadow),
          "add shadow MSRs");
    if (good) {
        check(msr_filter_dispatcher_builder_add_handler(builder, FORBIDDEN, FORBIDDEN, MSR_FILTER_ACCESS_READ,
                                                        read_good, NULL, NULL),
              "add FORBIDDEN");
    }
    msr_filter_dispatcher *d = NULL;
    check(msr_filter_dispatcher_builder_build(builder, &d), "build");
    msr_filter_dispatcher_builder_free(builder);
    msr_filter_policy_free(policy);
    return d;
}

/* --- vCPU threads. */

static pthread_barrier_t checkpoint;

struct vcpu {
    unsigned id;
    int fd;
    struct kvm_run *run;
    const msr_filter_live *live;
    /* What the guest reported, in order. */
    uint32_t values[4];
    unsigned nvalues;
    unsigned gps;
    unsigned msr_exits;
};

static void *vcpu_thread(void *arg) {
    struct vcpu *v = arg;
    for (;;) {
        /* The quiescent point of the live-swap protocol, right before every KVM_RUN. */
        check(msr_filter_live_enter_run(v->live, v->id), "enter_run");
        guest_run(v->fd);
        struct kvm_run *run = v->run;
        switch (run->exit_reason) {
        case KVM_EXIT_X86_RDMSR:
        case KVM_EXIT_X86_WRMSR: {
            msr_filter_outcome outcome;
            check(msr_filter_live_dispatch_run(v->live, v->id, run, &outcome), "dispatch");
            v->msr_exits++;
            break;
        }
        case KVM_EXIT_IO:
            if (run->io.direction != KVM_EXIT_IO_OUT) {
                DIE("vCPU %u: unexpected port read", v->id);
            }
            if (run->io.port == PORT_VALUE && v->nvalues < 4) {
                v->values[v->nvalues++] = io_value(run);
            } else if (run->io.port == PORT_CHECKPOINT) {
                /* Out of KVM_RUN, holding no exit: tell the protocol, wait for the VMM. */
                check(msr_filter_live_leave_run(v->live, v->id), "leave_run");
                pthread_barrier_wait(&checkpoint);
                pthread_barrier_wait(&checkpoint);
            } else if (run->io.port == PORT_GP) {
                v->gps++;
            } else {
                DIE("vCPU %u: unexpected exception reported on port %#x", v->id, run->io.port);
            }
            break;
        case KVM_EXIT_HLT:
            check(msr_filter_live_leave_run(v->live, v->id), "leave_run");
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

    /* The guest. Phase 1: read CORE_THREAD_COUNT; write its ebx to a shadow MSR and read it
     * back; read an MSR the policy denies (#GP, skipped by the guest's handler); checkpoint.
     * Phase 2 (after the replacement): read CORE_THREAD_COUNT and the formerly forbidden MSR;
     * LOOP_READS more reads of CORE_THREAD_COUNT (during which the VMM replaces again); hlt. */
    struct code c = {mem + GUEST_CODE};
    emit_rdmsr_report(&c, MSR_CORE_THREAD_COUNT);
    emit_wrmsr_ebx(&c, SHADOW_FIRST + 0x10);
    emit_rdmsr_report(&c, SHADOW_FIRST + 0x10);
    emit_rdmsr(&c, FORBIDDEN);
    static const uint8_t checkpoint_out[] = {0xe6, PORT_CHECKPOINT}; /* out PORT_CHECKPOINT, al */
    emit(&c, checkpoint_out, sizeof checkpoint_out);
    emit_rdmsr_report(&c, MSR_CORE_THREAD_COUNT);
    emit_rdmsr_report(&c, FORBIDDEN);
    emit_rdmsr_loop(&c, MSR_CORE_THREAD_COUNT, LOOP_READS);

    /* The first policy and its dispatcher; the library installs it with the ordering rule
     * (user-space MSR exits first, then the filter) and takes over the VM's interception. */
    static struct shadow shadow;
    static struct thread_count before = {.value = (1u << 16) | VCPUS};
    static struct thread_count after = {.value = (2u << 16) | (2 * VCPUS)};
    msr_filter_dispatcher *first = dispatcher(POLICY, &before, &shadow, false);
    msr_filter_filter *filter = NULL;
    check(msr_filter_dispatcher_filter(first, &filter), "filter");
    size_t ranges = 0;
    check(msr_filter_filter_range_count(filter, &ranges), "range count");
    msr_filter_filter_free(filter);
    msr_filter_vm *interception = NULL;
    check(msr_filter_vm_new(vm, 0, &interception), "vm");
    msr_filter_live *live = NULL;
    check(msr_filter_live_new(interception, VCPUS, first, &live), "install"); /* owns both now */
    printf("installed: a filter of %zu ranges (the policy plus the handled MSRs)\n", ranges);

    struct vcpu vcpus[VCPUS];
    pthread_t threads[VCPUS];
    if (pthread_barrier_init(&checkpoint, NULL, VCPUS + 1) != 0) {
        DIE("pthread_barrier_init");
    }
    for (unsigned i = 0; i < VCPUS; i++) {
        vcpus[i] = (struct vcpu){.id = i, .live = live};
        vcpus[i].fd = guest_vcpu(kvm, vm, i, 0x1000 * (i + 1) + 0x234, &vcpus[i].run);
    }
    for (unsigned i = 0; i < VCPUS; i++) {
        if (pthread_create(&threads[i], NULL, vcpu_thread, &vcpus[i]) != 0) {
            DIE("pthread_create");
        }
    }

    /* Both vCPUs at the checkpoint: replace the policy and the handlers. */
    pthread_barrier_wait(&checkpoint);
    uint64_t generation = 0;
    check(msr_filter_live_replace(live, dispatcher(POLICY_AFTER, &after, &shadow, true), &generation), "replace");
    printf("replaced at the checkpoint: generation %llu (%#x now handled, CORE_THREAD_COUNT %#llx)\n",
           (unsigned long long)generation, FORBIDDEN, (unsigned long long)after.value);
    pthread_barrier_wait(&checkpoint);
    /* And again while they loop over CORE_THREAD_COUNT (an equal dispatcher: no exit may be lost
     * or turn into #GP). */
    check(msr_filter_live_replace(live, dispatcher(POLICY_AFTER, &after, &shadow, true), &generation), "replace");
    printf("replaced again during phase 2: generation %llu\n", (unsigned long long)generation);
    for (unsigned i = 0; i < VCPUS; i++) {
        pthread_join(threads[i], NULL);
    }

    bool ok = true;
    for (unsigned i = 0; i < VCPUS; i++) {
        struct vcpu *v = &vcpus[i];
        uint32_t written = 0x1000 * (i + 1) + 0x234;
        printf("vcpu %u: rdmsr CORE_THREAD_COUNT = %#x (C callback)\n", i, v->values[0]);
        printf("vcpu %u: wrmsr %#x = %#x, rdmsr back = %#x (per-vCPU shadow)\n", i, SHADOW_FIRST + 0x10, written,
               v->values[1]);
        printf("vcpu %u: rdmsr %#x: %s\n", i, FORBIDDEN,
               v->gps == 1 ? "#GP (denied by the policy, no handler: fails closed)" : "NO #GP");
        printf("vcpu %u: after the replacement: CORE_THREAD_COUNT = %#x, %#x = %#x\n", i, v->values[2], FORBIDDEN,
               v->values[3]);
        printf("vcpu %u: %u MSR exits dispatched, %u #GP\n", i, v->msr_exits, v->gps);
        ok = ok && v->nvalues == 4 && v->values[0] == before.value && v->values[1] == written &&
             v->values[2] == after.value && v->values[3] == 0x600d && v->gps == 1 &&
             v->msr_exits == 4 + 2 + LOOP_READS;
    }
    printf("CORE_THREAD_COUNT reads: %lu before the replacement, %lu after\n", atomic_load(&before.reads),
           atomic_load(&after.reads));
    ok = ok && atomic_load(&before.reads) == VCPUS && atomic_load(&after.reads) == VCPUS * (1 + LOOP_READS);

    /* Statistics of the installed dispatcher, from C. */
    size_t handlers = 0;
    check(msr_filter_live_handler_count(live, &handlers), "handler count");
    for (size_t i = 0; i < handlers; i++) {
        msr_filter_handler_stats s;
        check(msr_filter_live_handler_stats(live, i, &s), "handler stats");
        printf("handler %#x-%#x (generation %llu): %llu reads, %llu writes, %llu faults\n", s.first, s.last,
               (unsigned long long)generation, (unsigned long long)s.reads, (unsigned long long)s.writes,
               (unsigned long long)s.faults);
    }
    msr_filter_route_stats routes;
    check(msr_filter_live_route_stats(live, &routes), "route stats");
    printf("exits no handler took since: %llu\n", (unsigned long long)(routes.unhandled + routes.unknown + routes.inval));

    /* Teardown: filter first, then the exits; the VM fd stays ours. */
    check(msr_filter_live_shutdown(live), "shutdown");
    pthread_barrier_destroy(&checkpoint);
    for (unsigned i = 0; i < VCPUS; i++) {
        close(vcpus[i].fd);
    }
    close(vm);
    close(kvm);
    printf("%s\n", ok ? "minivmm: ok" : "minivmm: FAILED");
    return ok ? 0 : 1;
}
