/* Dispatching MSR exits to C callbacks: registration errors, routes, both exit-completion
 * entry points (struct kvm_run and the exit's parts), failing closed, statistics, concurrency,
 * and every NULL. */
#define _GNU_SOURCE
#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "check.h"

#define SHADOW_FIRST 0x4b564d00u
#define SHADOW_LAST 0x4b564d0fu
#define VCPUS 4

/* Per-vCPU shadow registers: each vCPU thread touches only its own row. */
struct shadow {
    uint64_t regs[VCPUS][16];
    atomic_uint calls;
};

static int read_constant(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)vcpu;
    (void)index;
    *value = *(const uint64_t *)opaque;
    return 0;
}

static int shadow_read(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    struct shadow *s = opaque;
    atomic_fetch_add(&s->calls, 1);
    if (vcpu >= VCPUS) {
        return 1;
    }
    *value = s->regs[vcpu][index - SHADOW_FIRST];
    return 0;
}

static int shadow_write(void *opaque, uint32_t vcpu, uint32_t index, uint64_t value) {
    struct shadow *s = opaque;
    atomic_fetch_add(&s->calls, 1);
    if (vcpu >= VCPUS || value == UINT64_MAX) {
        return 1; /* #GP */
    }
    s->regs[vcpu][index - SHADOW_FIRST] = value;
    return 0;
}

static int refuse_read(void *opaque, uint32_t vcpu, uint32_t index, uint64_t *value) {
    (void)opaque;
    (void)vcpu;
    (void)index;
    *value = 0x1234; /* ignored: a refusal is #GP, the guest reads nothing */
    return -1;
}

static int inval_write(void *opaque, uint32_t vcpu, uint32_t index, uint64_t value) {
    (void)vcpu;
    (void)index;
    *(uint64_t *)opaque = value;
    return 0;
}

static const uint64_t THREAD_COUNT = 0x00010002;
static uint64_t inval_seen, write_35;

static msr_filter_dispatcher *build(struct shadow *s) {
    const char *text = "default allow\ndeny rw 0x474f4f00\n";
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_policy_parse(text, strlen(text), &p, NULL, NULL));
    msr_filter_dispatcher_builder *b = NULL;
    CHECK_OK(msr_filter_dispatcher_builder_new(p, &b));
    msr_filter_policy_free(p); /* the builder copied it */

    CHECK_OK(msr_filter_dispatcher_builder_add_handler(b, 0x35, 0x35, MSR_FILTER_ACCESS_READ,
                                                       read_constant, NULL, (void *)&THREAD_COUNT));
    CHECK_OK(msr_filter_dispatcher_builder_add_handler(b, SHADOW_FIRST, SHADOW_LAST, MSR_FILTER_ACCESS_READ_WRITE,
                                                       shadow_read, shadow_write, s));
    CHECK_OK(msr_filter_dispatcher_builder_add_handler(b, 0x3a, 0x3a, MSR_FILTER_ACCESS_READ, refuse_read, NULL,
                                                       NULL));

    /* Registration errors leave the builder as it was. */
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(b, 0x35, 0x36, MSR_FILTER_ACCESS_READ_WRITE,
                                                           shadow_read, shadow_write, s),
                 MSR_FILTER_STATUS_BUILD_ERROR);
    CHECK_ERROR_MENTIONS("two handlers");
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(b, 0x7ff, 0x800, MSR_FILTER_ACCESS_READ, shadow_read,
                                                           NULL, s),
                 MSR_FILTER_STATUS_BUILD_ERROR);
    CHECK_ERROR_MENTIONS("x2APIC");
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(b, 0x40, 0x40, MSR_FILTER_ACCESS_READ, NULL,
                                                           shadow_write, s),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(b, 0x40, 0x40, MSR_FILTER_ACCESS_WRITE, shadow_read,
                                                           NULL, s),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(b, 0x40, 0x40, 0, shadow_read, shadow_write, s),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(b, 0x41, 0x40, MSR_FILTER_ACCESS_READ, shadow_read,
                                                           NULL, s),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    /* A write-only handler may go without a read callback beside a read-only one. */
    CHECK_OK(msr_filter_dispatcher_builder_add_handler(b, 0x35, 0x35, MSR_FILTER_ACCESS_WRITE, NULL, inval_write,
                                                       &write_35));

    /* Routes. */
    CHECK_STATUS(msr_filter_dispatcher_builder_route_gp(b, 0), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_route_gp(b, 8), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_OK(msr_filter_dispatcher_builder_route_gp(b, MSR_FILTER_EXIT_REASON_FILTER));
    CHECK_OK(msr_filter_dispatcher_builder_route_value(b, MSR_FILTER_EXIT_REASON_UNKNOWN, 0));
    CHECK_STATUS(msr_filter_dispatcher_builder_route_value(b, 0x10, 0), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_OK(msr_filter_dispatcher_builder_route_callbacks(b, MSR_FILTER_EXIT_REASON_INVAL, NULL, inval_write,
                                                           &inval_seen));
    CHECK_STATUS(msr_filter_dispatcher_builder_route_callbacks(b, 0, NULL, NULL, NULL),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);

    msr_filter_dispatcher *d = NULL;
    CHECK_OK(msr_filter_dispatcher_builder_build(b, &d));
    CHECK(d != NULL);
    /* The builder stays usable: a second dispatcher, without exit counters: the same result for
       the guest, no count. */
    CHECK_STATUS(msr_filter_dispatcher_builder_exit_counters(NULL, false), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_OK(msr_filter_dispatcher_builder_exit_counters(b, false));
    msr_filter_dispatcher *d2 = NULL;
    CHECK_OK(msr_filter_dispatcher_builder_build(b, &d2));
    unsigned long long data = 0;
    uint8_t error = 9;
    CHECK_OK(msr_filter_dispatcher_dispatch_msr(d2, 0, false, MSR_FILTER_EXIT_REASON_FILTER, 0x35, &data, &error,
                                                NULL));
    CHECK(data == THREAD_COUNT && error == 0);
    msr_filter_handler_stats hs;
    CHECK_OK(msr_filter_dispatcher_handler_stats(d2, 0, &hs));
    CHECK(hs.first == 0x35 && hs.access == MSR_FILTER_ACCESS_READ && hs.reads == 0);
    msr_filter_dispatcher_free(d2);
    msr_filter_dispatcher_builder_free(b);
    return d;
}

static msr_filter_outcome msr(const msr_filter_dispatcher *d, uint32_t vcpu, bool write, uint32_t reason,
                              uint32_t index, unsigned long long *data, uint8_t *error) {
    msr_filter_outcome o = 99;
    CHECK_OK(msr_filter_dispatcher_dispatch_msr(d, vcpu, write, reason, index, data, error, &o));
    return o;
}

static void dispatching(msr_filter_dispatcher *d, struct shadow *s) {
    /* The filter intercepts exactly what is handled, plus the policy's denies. */
    msr_filter_filter *f = NULL;
    CHECK_OK(msr_filter_dispatcher_filter(d, &f));
    msr_filter_action a;
    CHECK_OK(msr_filter_filter_decide(f, 0x35, MSR_FILTER_ACCESS_READ, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    CHECK_OK(msr_filter_filter_decide(f, SHADOW_LAST, MSR_FILTER_ACCESS_WRITE, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    CHECK_OK(msr_filter_filter_decide(f, 0x3a, MSR_FILTER_ACCESS_WRITE, &a));
    CHECK(a == MSR_FILTER_ACTION_ALLOW);
    CHECK_OK(msr_filter_filter_decide(f, 0x474f4f00, MSR_FILTER_ACCESS_READ, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    msr_filter_filter_free(f);
    /* UNKNOWN and INVAL are routed (not #GP): the VM must enable them, with FILTER. */
    uint32_t reasons = 0;
    CHECK_OK(msr_filter_dispatcher_exit_reasons(d, &reasons));
    CHECK(reasons == (MSR_FILTER_EXIT_REASON_FILTER | MSR_FILTER_EXIT_REASON_UNKNOWN | MSR_FILTER_EXIT_REASON_INVAL));
    CHECK_STATUS(msr_filter_dispatcher_exit_reasons(d, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_exit_reasons(NULL, &reasons), MSR_FILTER_STATUS_NULL_ARGUMENT);

    const uint32_t FILTER = MSR_FILTER_EXIT_REASON_FILTER;
    /* unsigned long long: the kernel's __u64, which the data pointer takes. */
    unsigned long long data = 0xdead;
    uint8_t error = 0;
    CHECK(msr(d, 0, false, FILTER, 0x35, &data, &error) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(data == THREAD_COUNT && error == 0);

    /* Per-vCPU state through `vcpu`. */
    data = 0x1111;
    CHECK(msr(d, 1, true, FILTER, SHADOW_FIRST + 3, &data, &error) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(error == 0 && data == 0x1111 && s->regs[1][3] == 0x1111);
    data = 0;
    CHECK(msr(d, 1, false, FILTER, SHADOW_FIRST + 3, &data, &error) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(data == 0x1111);
    CHECK(msr(d, 2, false, FILTER, SHADOW_FIRST + 3, &data, &error) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(data == 0);
    /* A callback's nonzero return is #GP. */
    data = UINT64_MAX;
    CHECK(msr(d, 0, true, FILTER, SHADOW_FIRST, &data, &error) == MSR_FILTER_OUTCOME_GP);
    CHECK(error == 1);
    CHECK(msr(d, 0, false, FILTER, 0x3a, &data, &error) == MSR_FILTER_OUTCOME_GP);
    CHECK(error == 1 && data == 0); /* the fail-open preset never stands */

    /* Exits nobody takes fail closed, whatever the kernel preset. */
    data = 0x5555;
    error = 0;
    CHECK(msr(d, 0, false, FILTER, 0x474f4f00, &data, &error) == MSR_FILTER_OUTCOME_GP);
    CHECK(error == 1 && data == 0);
    /* UNKNOWN routed to the value 0 (ignore_msrs); INVAL to a callback (its read is NULL: #GP). */
    error = 0;
    CHECK(msr(d, 0, false, MSR_FILTER_EXIT_REASON_UNKNOWN, 0x12345, &data, &error) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(error == 0 && data == 0);
    data = 77;
    CHECK(msr(d, 3, true, MSR_FILTER_EXIT_REASON_INVAL, 0x10, &data, &error) == MSR_FILTER_OUTCOME_COMPLETED);
    CHECK(error == 0 && inval_seen == 77);
    CHECK(msr(d, 3, false, MSR_FILTER_EXIT_REASON_INVAL, 0x10, &data, &error) == MSR_FILTER_OUTCOME_GP);
    /* A reason the kernel never gives goes the way of unhandled FILTER exits: #GP. */
    CHECK(msr(d, 3, false, 0, 0x99, &data, &error) == MSR_FILTER_OUTCOME_GP);

    /* The outcome pointer is optional. */
    CHECK_OK(msr_filter_dispatcher_dispatch_msr(d, 0, false, FILTER, 0x35, &data, &error, NULL));
    CHECK(data == THREAD_COUNT);

    /* NULLs: error is set to 1 before anything else is checked. */
    error = 0;
    CHECK_STATUS(msr_filter_dispatcher_dispatch_msr(d, 0, false, FILTER, 0x35, NULL, &error, NULL),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK(error == 1);
    error = 0;
    CHECK_STATUS(msr_filter_dispatcher_dispatch_msr(NULL, 0, false, FILTER, 0x35, &data, &error, NULL),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK(error == 1);
    CHECK_STATUS(msr_filter_dispatcher_dispatch_msr(d, 0, false, FILTER, 0x35, &data, NULL, NULL),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);

    /* The struct kvm_run form. */
    struct kvm_run *run = calloc(1, sizeof *run);
    CHECK(run != NULL);
    run->exit_reason = KVM_EXIT_X86_RDMSR;
    run->msr.reason = KVM_MSR_EXIT_REASON_FILTER;
    run->msr.index = 0x35;
    run->msr.data = 0;
    run->msr.error = 0;
    msr_filter_outcome o = 99;
    CHECK_OK(msr_filter_dispatcher_dispatch_run(d, 0, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_COMPLETED && run->msr.data == THREAD_COUNT && run->msr.error == 0);
    run->exit_reason = KVM_EXIT_X86_WRMSR;
    run->msr.index = SHADOW_FIRST + 5;
    run->msr.data = 0xabcdef;
    CHECK_OK(msr_filter_dispatcher_dispatch_run(d, 2, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_COMPLETED && s->regs[2][5] == 0xabcdef && run->msr.error == 0);
    run->exit_reason = KVM_EXIT_X86_RDMSR;
    run->msr.index = 0x474f4f00;
    CHECK_OK(msr_filter_dispatcher_dispatch_run(d, 0, run, NULL));
    CHECK(run->msr.error == 1 && run->msr.data == 0);
    /* Not an MSR exit: untouched. */
    run->exit_reason = KVM_EXIT_HLT;
    run->msr.error = 7;
    run->msr.data = 9;
    CHECK_OK(msr_filter_dispatcher_dispatch_run(d, 0, run, &o));
    CHECK(o == MSR_FILTER_OUTCOME_NOT_MSR && run->msr.error == 7 && run->msr.data == 9);
    CHECK_STATUS(msr_filter_dispatcher_dispatch_run(d, 0, NULL, &o), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_dispatch_run(NULL, 0, run, &o), MSR_FILTER_STATUS_NULL_ARGUMENT);
    free(run);
}

struct worker {
    msr_filter_dispatcher *d;
    uint32_t vcpu;
};

#define ROUNDS 2000

static void *vcpu_thread(void *arg) {
    struct worker *w = arg;
    for (uint64_t i = 1; i <= ROUNDS; i++) {
        unsigned long long data = i * 16 + w->vcpu;
        uint8_t error = 0;
        uint32_t index = SHADOW_FIRST + (uint32_t)(i % 16);
        if (msr_filter_dispatcher_dispatch_msr(w->d, w->vcpu, true, MSR_FILTER_EXIT_REASON_FILTER, index, &data,
                                               &error, NULL) != MSR_FILTER_STATUS_OK ||
            error != 0) {
            return (void *)1;
        }
        data = 0;
        if (msr_filter_dispatcher_dispatch_msr(w->d, w->vcpu, false, MSR_FILTER_EXIT_REASON_FILTER, index, &data,
                                               &error, NULL) != MSR_FILTER_STATUS_OK ||
            error != 0 || data != i * 16 + w->vcpu) {
            return (void *)2;
        }
    }
    return NULL;
}

static void concurrently(msr_filter_dispatcher *d, struct shadow *s) {
    unsigned before = atomic_load(&s->calls);
    pthread_t threads[VCPUS];
    struct worker workers[VCPUS];
    for (uint32_t i = 0; i < VCPUS; i++) {
        workers[i] = (struct worker){d, i};
        CHECK(pthread_create(&threads[i], NULL, vcpu_thread, &workers[i]) == 0);
    }
    for (uint32_t i = 0; i < VCPUS; i++) {
        void *ret = (void *)3;
        CHECK(pthread_join(threads[i], &ret) == 0);
        CHECK(ret == NULL);
    }
    CHECK(atomic_load(&s->calls) - before == VCPUS * ROUNDS * 2);
}

static void statistics(msr_filter_dispatcher *d) {
    size_t n = 0;
    CHECK_OK(msr_filter_dispatcher_handler_count(d, &n));
    CHECK(n == 4);
    /* In MSR order: 0x35 read, 0x35 write, 0x3a, the shadow range. */
    msr_filter_handler_stats hs;
    CHECK_OK(msr_filter_dispatcher_handler_stats(d, 3, &hs));
    CHECK(hs.first == SHADOW_FIRST && hs.last == SHADOW_LAST && hs.access == MSR_FILTER_ACCESS_READ_WRITE);
    /* 2 writes + 1 refused write + 2 reads in `dispatching`, then the threads. */
    CHECK(hs.writes == 3 + VCPUS * ROUNDS && hs.reads == 2 + VCPUS * ROUNDS && hs.faults == 1);
    CHECK_OK(msr_filter_dispatcher_handler_stats(d, 2, &hs));
    CHECK(hs.first == 0x3a && hs.reads == 1 && hs.faults == 1);
    uint64_t reads_of_35 = 0;
    for (size_t i = 0; i < 2; i++) {
        CHECK_OK(msr_filter_dispatcher_handler_stats(d, i, &hs));
        CHECK(hs.first == 0x35);
        reads_of_35 += hs.reads;
    }
    CHECK(reads_of_35 == 3);
    CHECK_STATUS(msr_filter_dispatcher_handler_stats(d, 4, &hs), MSR_FILTER_STATUS_OUT_OF_RANGE);

    msr_filter_route_stats rs;
    CHECK_OK(msr_filter_dispatcher_route_stats(d, &rs));
    CHECK(rs.unknown == 1 && rs.inval == 2);
    CHECK(rs.unhandled == 3); /* 0x474f4f00 twice, reason 0 once */
    CHECK(rs.faults == 4 && rs.untracked == 0);

    size_t count = 0;
    CHECK_STATUS(msr_filter_dispatcher_route_msr_stats(d, NULL, 0, &count), MSR_FILTER_STATUS_BUFFER_TOO_SMALL);
    CHECK(count == 4); /* 0x10, 0x99, 0x12345, 0x474f4f00 */
    msr_filter_route_msr_stats ms[8];
    CHECK_STATUS(msr_filter_dispatcher_route_msr_stats(d, ms, 2, &count), MSR_FILTER_STATUS_BUFFER_TOO_SMALL);
    CHECK(ms[0].index == 0x10 && ms[1].index == 0x99);
    CHECK_OK(msr_filter_dispatcher_route_msr_stats(d, ms, 8, &count));
    CHECK(count == 4);
    CHECK(ms[0].index == 0x10 && ms[0].reads == 1 && ms[0].writes == 1);
    CHECK(ms[3].index == 0x474f4f00 && ms[3].reads == 2);

    CHECK_STATUS(msr_filter_dispatcher_route_msr_stats(d, NULL, 1, &count), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_route_msr_stats(d, ms, 8, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_route_msr_stats(NULL, ms, 8, &count), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_route_stats(NULL, &rs), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_route_stats(d, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_handler_stats(NULL, 0, &hs), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_handler_stats(d, 0, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_handler_count(NULL, &n), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_handler_count(d, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
}

static void build_errors_and_nulls(void) {
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_policy_new(MSR_FILTER_ACTION_ALLOW, &p));
    msr_filter_dispatcher_builder *b = NULL;
    CHECK_STATUS(msr_filter_dispatcher_builder_new(NULL, &b), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_new(p, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_OK(msr_filter_dispatcher_builder_new(p, &b));
    /* 17 handlers far apart need 17 ranges: registration is fine, building is not. */
    for (uint32_t i = 0; i < 17; i++) {
        CHECK_OK(msr_filter_dispatcher_builder_add_handler(b, 0x10000000u + 0x1000000u * i,
                                                           0x10000000u + 0x1000000u * i, MSR_FILTER_ACCESS_READ,
                                                           read_constant, NULL, (void *)&THREAD_COUNT));
    }
    msr_filter_dispatcher *d = (msr_filter_dispatcher *)1;
    CHECK_STATUS(msr_filter_dispatcher_builder_build(b, &d), MSR_FILTER_STATUS_BUILD_ERROR);
    CHECK(d == NULL);
    CHECK_ERROR_MENTIONS("kernel ranges");
    CHECK_STATUS(msr_filter_dispatcher_builder_build(NULL, &d), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_build(b, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_add_handler(NULL, 1, 1, 1, read_constant, NULL, NULL),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_route_gp(NULL, 1), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_route_value(NULL, 1, 0), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_dispatcher_builder_route_callbacks(NULL, 1, NULL, NULL, NULL),
                 MSR_FILTER_STATUS_NULL_ARGUMENT);
    msr_filter_filter *f = NULL;
    CHECK_STATUS(msr_filter_dispatcher_filter(NULL, &f), MSR_FILTER_STATUS_NULL_ARGUMENT);
    msr_filter_dispatcher_builder_free(b);
    msr_filter_dispatcher_builder_free(NULL);
    msr_filter_dispatcher_free(NULL);
    msr_filter_policy_free(p);
}

int main(void) {
    static struct shadow s;
    msr_filter_dispatcher *d = build(&s);
    dispatching(d, &s);
    concurrently(d, &s);
    statistics(d);
    msr_filter_filter *f = NULL;
    CHECK_STATUS(msr_filter_dispatcher_filter(d, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    (void)f;
    msr_filter_dispatcher_free(d);
    build_errors_and_nulls();
    DONE("test_dispatch");
}
