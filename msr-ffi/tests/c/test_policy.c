/* Policies and filters through the C API: parse, build, pack, inspect, decide, explain, export
 * as struct kvm_msr_filter and read one back; every error path and every NULL. */
#include <stdint.h>

#include "check.h"

static msr_filter_policy *parse(const char *text) {
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_policy_parse(text, strlen(text), &p, NULL, NULL));
    CHECK(p != NULL);
    return p;
}

static msr_filter_filter *pack(const msr_filter_policy *p) {
    msr_filter_filter *f = NULL;
    CHECK_OK(msr_filter_policy_pack(p, &f));
    CHECK(f != NULL);
    return f;
}

static msr_filter_action decide(const msr_filter_filter *f, uint32_t index, uint32_t access) {
    msr_filter_action a = 99;
    CHECK_OK(msr_filter_filter_decide(f, index, access, &a));
    return a;
}

static void statuses_and_messages(void) {
    CHECK(strcmp(msr_filter_status_name(MSR_FILTER_STATUS_OK), "MSR_FILTER_STATUS_OK") == 0);
    CHECK(strcmp(msr_filter_status_name(MSR_FILTER_STATUS_PANIC), "MSR_FILTER_STATUS_PANIC") == 0);
    CHECK(strcmp(msr_filter_status_name(MSR_FILTER_STATUS_FILTER_EXIT_REQUIRED),
                 "MSR_FILTER_STATUS_FILTER_EXIT_REQUIRED") == 0);
    CHECK(strcmp(msr_filter_status_name(12345), "MSR_FILTER_STATUS_(unknown)") == 0);
    CHECK(strlen(msr_filter_version()) > 0);

    size_t len = 0;
    char buf[8];
    CHECK_STATUS(msr_filter_last_error_message(buf, sizeof buf, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_last_error_message(NULL, 4, &len), MSR_FILTER_STATUS_NULL_ARGUMENT);

    /* A failure sets the message; asking for it (even failing to) keeps it. */
    CHECK_STATUS(msr_filter_policy_new(MSR_FILTER_ACTION_ALLOW, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_last_error_message(NULL, 0, &len), MSR_FILTER_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == strlen("argument `policy_out` is NULL"));
    CHECK_STATUS(msr_filter_last_error_message(buf, sizeof buf, &len), MSR_FILTER_STATUS_BUFFER_TOO_SMALL);
    CHECK(strcmp(buf, "argumen") == 0);
    CHECK(strcmp(last_error(), "argument `policy_out` is NULL") == 0);
    /* Success leaves it. */
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_policy_new(MSR_FILTER_ACTION_ALLOW, &p));
    CHECK(strcmp(last_error(), "argument `policy_out` is NULL") == 0);
    msr_filter_policy_free(p);
}

static void parsing(void) {
    const char *text = "default allow\n"
                       "deny  w  IA32_SPEC_CTRL   # named\n"
                       "deny  rw 0x474f4f00\n";
    /* Not NUL-terminated: exactly `len` bytes on the heap, so ASan sees any over-read. */
    size_t len = strlen(text);
    char *exact = malloc(len);
    CHECK(exact != NULL);
    memcpy(exact, text, len);
    msr_filter_policy *p = NULL;
    uint32_t line = 77, column = 77;
    CHECK_OK(msr_filter_policy_parse(exact, len, &p, &line, &column));
    free(exact);
    CHECK(line == 0 && column == 0);

    size_t count = 0;
    CHECK_OK(msr_filter_policy_rule_count(p, &count));
    CHECK(count == 2);
    msr_filter_rule rule;
    CHECK_OK(msr_filter_policy_rule(p, 0, &rule));
    CHECK(rule.first == 0x48 && rule.last == 0x48);
    CHECK(rule.access == MSR_FILTER_ACCESS_WRITE && rule.action == MSR_FILTER_ACTION_DENY);
    CHECK_OK(msr_filter_policy_rule(p, 1, &rule));
    CHECK(rule.first == 0x474f4f00 && rule.access == MSR_FILTER_ACCESS_READ_WRITE);
    CHECK_STATUS(msr_filter_policy_rule(p, 2, &rule), MSR_FILTER_STATUS_OUT_OF_RANGE);
    CHECK_ERROR_MENTIONS("rule 2");

    msr_filter_action a;
    CHECK_OK(msr_filter_policy_default_action(p, &a));
    CHECK(a == MSR_FILTER_ACTION_ALLOW);
    CHECK_OK(msr_filter_policy_decide(p, 0x48, MSR_FILTER_ACCESS_WRITE, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    CHECK_OK(msr_filter_policy_decide(p, 0x48, MSR_FILTER_ACCESS_READ, &a));
    CHECK(a == MSR_FILTER_ACTION_ALLOW);
    CHECK_STATUS(msr_filter_policy_decide(p, 0x48, MSR_FILTER_ACCESS_READ_WRITE, &a),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    msr_filter_policy_free(p);

    /* Errors carry line and column, through the out-parameters and the message. */
    const char *bad = "default deny\nallow x 0x10\n";
    p = (msr_filter_policy *)1;
    CHECK_STATUS(msr_filter_policy_parse(bad, strlen(bad), &p, &line, &column), MSR_FILTER_STATUS_PARSE_ERROR);
    CHECK(p == NULL);
    CHECK(line == 2 && column == 7);
    CHECK(strncmp(last_error(), "line 2, column 7: ", 18) == 0);
    CHECK_ERROR_MENTIONS("`x`");
    /* The position out-parameters are optional. */
    CHECK_STATUS(msr_filter_policy_parse(bad, strlen(bad), &p, NULL, NULL), MSR_FILTER_STATUS_PARSE_ERROR);
    const char *no_default = "deny rw 0x10\n";
    CHECK_STATUS(msr_filter_policy_parse(no_default, strlen(no_default), &p, &line, &column),
                 MSR_FILTER_STATUS_PARSE_ERROR);
    CHECK_ERROR_MENTIONS("no `default allow`");
    const char not_utf8[] = "default allow\ndeny rw \xff\n";
    CHECK_STATUS(msr_filter_policy_parse(not_utf8, sizeof not_utf8 - 1, &p, &line, &column),
                 MSR_FILTER_STATUS_PARSE_ERROR);
    CHECK(line == 2 && column == 9);
    CHECK_STATUS(msr_filter_policy_parse(NULL, 0, &p, NULL, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_policy_parse(bad, strlen(bad), NULL, NULL, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_ERROR_MENTIONS("policy_out");
    /* Empty text has no default line. */
    CHECK_STATUS(msr_filter_policy_parse("", 0, &p, NULL, NULL), MSR_FILTER_STATUS_PARSE_ERROR);
}

static void building(void) {
    msr_filter_policy *p = NULL;
    CHECK_STATUS(msr_filter_policy_new(2, &p), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK(p == NULL);
    CHECK_OK(msr_filter_policy_new(MSR_FILTER_ACTION_ALLOW, &p));
    CHECK_STATUS(msr_filter_policy_add_rule(p, 0x10, 0x10, 0, MSR_FILTER_ACTION_DENY),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_policy_add_rule(p, 0x10, 0x10, 4, MSR_FILTER_ACTION_DENY),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_policy_add_rule(p, 0x10, 0x10, MSR_FILTER_ACCESS_READ, 9),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_policy_add_rule(p, 0x20, 0x10, MSR_FILTER_ACCESS_READ, MSR_FILTER_ACTION_DENY),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("after its last MSR");
    CHECK_STATUS(msr_filter_policy_add_rule(NULL, 0x10, 0x10, 1, 1), MSR_FILTER_STATUS_NULL_ARGUMENT);
    size_t count = 99;
    CHECK_OK(msr_filter_policy_rule_count(p, &count));
    CHECK(count == 0);

    /* No capacity limit: 400 rules (a fixed-capacity Policy<16> would refuse the 17th), packed
     * into one range. */
    for (uint32_t i = 0; i < 400; i++) {
        CHECK_OK(msr_filter_policy_add_rule(p, 0x40000000 + 2 * i, 0x40000000 + 2 * i,
                                            MSR_FILTER_ACCESS_WRITE, MSR_FILTER_ACTION_DENY));
    }
    /* A later rule overrides earlier ones. */
    CHECK_OK(msr_filter_policy_add_rule(p, 0x40000002, 0x40000002, MSR_FILTER_ACCESS_READ_WRITE,
                                        MSR_FILTER_ACTION_ALLOW));
    CHECK_OK(msr_filter_policy_rule_count(p, &count));
    CHECK(count == 401);
    msr_filter_filter *f = pack(p);
    CHECK_OK(msr_filter_filter_range_count(f, &count));
    CHECK(count == 1);
    bool minimal = false;
    CHECK_OK(msr_filter_filter_proven_minimal(f, &minimal));
    CHECK(minimal);
    CHECK(decide(f, 0x40000000, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_DENY);
    CHECK(decide(f, 0x40000000, MSR_FILTER_ACCESS_READ) == MSR_FILTER_ACTION_ALLOW);
    CHECK(decide(f, 0x40000001, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_ALLOW);
    CHECK(decide(f, 0x40000002, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_ALLOW);
    CHECK(decide(f, 0x4000031e, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_DENY);
    CHECK(decide(f, 0x40000320, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_ALLOW);
    msr_filter_filter_free(f);

    CHECK_OK(msr_filter_policy_set_default_action(p, MSR_FILTER_ACTION_DENY));
    CHECK_STATUS(msr_filter_policy_set_default_action(p, 5), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_policy_set_default_action(NULL, 0), MSR_FILTER_STATUS_NULL_ARGUMENT);
    msr_filter_action a;
    CHECK_OK(msr_filter_policy_default_action(p, &a));
    CHECK(a == MSR_FILTER_ACTION_DENY);
    msr_filter_policy_free(p);

    /* Packing errors: x2APIC MSRs cannot be denied; 17 far-apart MSRs need 17 ranges. */
    p = parse("default allow\ndeny rw 0x800\n");
    f = (msr_filter_filter *)1;
    CHECK_STATUS(msr_filter_policy_pack(p, &f), MSR_FILTER_STATUS_PACK_ERROR);
    CHECK(f == NULL);
    CHECK_ERROR_MENTIONS("x2APIC");
    msr_filter_policy_free(p);
    CHECK_OK(msr_filter_policy_new(MSR_FILTER_ACTION_ALLOW, &p));
    for (uint32_t i = 0; i < 17; i++) {
        CHECK_OK(msr_filter_policy_add_rule(p, 0x10000000u * (i / 16 + 1) + 0x100000u * i,
                                            0x10000000u * (i / 16 + 1) + 0x100000u * i,
                                            MSR_FILTER_ACCESS_READ_WRITE, MSR_FILTER_ACTION_DENY));
    }
    CHECK_STATUS(msr_filter_policy_pack(p, &f), MSR_FILTER_STATUS_PACK_ERROR);
    CHECK_ERROR_MENTIONS("more than the 16");
    msr_filter_policy_free(p);
}

static void inspecting(void) {
    msr_filter_policy *p = parse("default allow\ndeny w IA32_SPEC_CTRL\ndeny rw 0x474f4f00\n");
    msr_filter_filter *f = pack(p);
    msr_filter_policy_free(p); /* the filter does not depend on it */

    size_t count = 0, bytes = 0;
    bool minimal = false;
    CHECK_OK(msr_filter_filter_range_count(f, &count));
    CHECK_OK(msr_filter_filter_bitmap_bytes(f, &bytes));
    CHECK_OK(msr_filter_filter_proven_minimal(f, &minimal));
    CHECK(count == 2 && minimal);
    msr_filter_action a;
    CHECK_OK(msr_filter_filter_default_action(f, &a));
    CHECK(a == MSR_FILTER_ACTION_ALLOW);

    size_t seen = 0, total = 0;
    for (size_t slot = 0; slot < MSR_FILTER_MAX_RANGES; slot++) {
        msr_filter_range_info r;
        CHECK_OK(msr_filter_filter_range(f, slot, &r));
        if (r.nmsrs == 0) {
            CHECK(r.bitmap == NULL && r.bitmap_bytes == 0 && r.flags == 0);
            continue;
        }
        seen++;
        total += r.bitmap_bytes;
        CHECK(r.bitmap != NULL);
        CHECK(r.bitmap_bytes == (r.nmsrs + 63) / 64 * 8);
        CHECK(r.flags != 0 && (r.flags & ~3u) == 0);
        /* Read every byte the kernel would read. */
        unsigned sum = 0;
        for (size_t i = 0; i < r.bitmap_bytes; i++) {
            sum += r.bitmap[i];
        }
        (void)sum;
    }
    CHECK(seen == count && total == bytes);
    msr_filter_range_info r;
    CHECK_STATUS(msr_filter_filter_range(f, MSR_FILTER_MAX_RANGES, &r), MSR_FILTER_STATUS_OUT_OF_RANGE);

    CHECK(decide(f, 0x48, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_DENY);
    CHECK(decide(f, 0x48, MSR_FILTER_ACCESS_READ) == MSR_FILTER_ACTION_ALLOW);
    CHECK(decide(f, 0x474f4f00, MSR_FILTER_ACCESS_READ) == MSR_FILTER_ACTION_DENY);
    CHECK(decide(f, 0x10, MSR_FILTER_ACCESS_READ) == MSR_FILTER_ACTION_ALLOW);
    CHECK_STATUS(msr_filter_filter_decide(f, 0x48, 0, &a), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_filter_decide(f, 0x48, MSR_FILTER_ACCESS_READ_WRITE, &a),
                 MSR_FILTER_STATUS_INVALID_ARGUMENT);

    msr_filter_explanation e;
    CHECK_OK(msr_filter_filter_explain(f, 0x474f4f00, MSR_FILTER_ACCESS_WRITE, &e));
    CHECK(e.action == MSR_FILTER_ACTION_DENY && e.decider == MSR_FILTER_DECIDER_RANGE);
    CHECK_OK(msr_filter_filter_range(f, e.slot, &r));
    CHECK(r.base + e.bit == 0x474f4f00);
    CHECK_OK(msr_filter_filter_explain(f, 0x830, MSR_FILTER_ACCESS_WRITE, &e));
    CHECK(e.action == MSR_FILTER_ACTION_ALLOW && e.decider == MSR_FILTER_DECIDER_X2APIC);
    CHECK_OK(msr_filter_filter_explain(f, 0xc0000080, MSR_FILTER_ACCESS_READ, &e));
    CHECK(e.action == MSR_FILTER_ACTION_ALLOW && e.decider == MSR_FILTER_DECIDER_DEFAULT);
    CHECK_STATUS(msr_filter_filter_explain(f, 0x10, 7, &e), MSR_FILTER_STATUS_INVALID_ARGUMENT);

    /* The kernel's struct: pointers into the filter, valid until it is freed. */
    const msr_filter_kvm_msr_filter *kvm = NULL;
    CHECK_OK(msr_filter_filter_kvm_msr_filter(f, &kvm));
    CHECK(kvm != NULL && kvm->flags == 0 && kvm->pad == 0);
    for (size_t slot = 0; slot < MSR_FILTER_MAX_RANGES; slot++) {
        CHECK_OK(msr_filter_filter_range(f, slot, &r));
        CHECK(kvm->ranges[slot].base == r.base && kvm->ranges[slot].nmsrs == r.nmsrs);
        CHECK(kvm->ranges[slot].flags == r.flags && kvm->ranges[slot].bitmap == r.bitmap);
    }
    /* Read back as another program's filter: the same decisions. */
    msr_filter_filter *back = NULL;
    CHECK_OK(msr_filter_filter_from_kvm(kvm, &back));
    CHECK_OK(msr_filter_filter_proven_minimal(back, &minimal));
    CHECK(!minimal);
    for (uint32_t i = 0; i < 0x100; i++) {
        for (uint32_t acc = 1; acc <= 2; acc++) {
            CHECK(decide(back, i, acc) == decide(f, i, acc));
        }
    }
    CHECK(decide(back, 0x474f4f00, MSR_FILTER_ACCESS_READ) == MSR_FILTER_ACTION_DENY);
    msr_filter_filter_free(back);

    /* Filters the kernel would refuse. */
    msr_filter_kvm_msr_filter bad = *kvm;
    bad.flags = 2;
    back = (msr_filter_filter *)1;
    CHECK_STATUS(msr_filter_filter_from_kvm(&bad, &back), MSR_FILTER_STATUS_INVALID_FILTER);
    CHECK(back == NULL);
    CHECK_ERROR_MENTIONS("EINVAL");
    bad = *kvm;
    bad.ranges[0].flags = 4;
    CHECK_STATUS(msr_filter_filter_from_kvm(&bad, &back), MSR_FILTER_STATUS_INVALID_FILTER);
    memset(&bad, 0, sizeof bad);
    bad.flags = MSR_FILTER_ACTION_DENY; /* DEFAULT_DENY and no range: EINVAL */
    CHECK_STATUS(msr_filter_filter_from_kvm(&bad, &back), MSR_FILTER_STATUS_INVALID_FILTER);
    bad.ranges[0].flags = MSR_FILTER_ACCESS_READ;
    bad.ranges[0].nmsrs = 1;
    bad.ranges[0].base = 0x10;
    bad.ranges[0].bitmap = NULL; /* the kernel cannot read it: EFAULT */
    CHECK_STATUS(msr_filter_filter_from_kvm(&bad, &back), MSR_FILTER_STATUS_INVALID_FILTER);
    uint64_t word = 0;
    bad.ranges[0].bitmap = (uint8_t *)&word;
    CHECK_OK(msr_filter_filter_from_kvm(&bad, &back));
    CHECK(decide(back, 0x10, MSR_FILTER_ACCESS_READ) == MSR_FILTER_ACTION_DENY);
    CHECK(decide(back, 0x10, MSR_FILTER_ACCESS_WRITE) == MSR_FILTER_ACTION_DENY);
    CHECK_OK(msr_filter_filter_explain(back, 0x10, MSR_FILTER_ACCESS_WRITE, &e));
    CHECK(e.decider == MSR_FILTER_DECIDER_DEFAULT);
    msr_filter_filter_free(back);
    msr_filter_filter_free(f);

    /* A policy that removes filtering. */
    p = parse("default allow\n");
    f = pack(p);
    CHECK_OK(msr_filter_filter_explain(f, 0x10, MSR_FILTER_ACCESS_READ, &e));
    CHECK(e.action == MSR_FILTER_ACTION_ALLOW && e.decider == MSR_FILTER_DECIDER_NO_FILTER);
    CHECK_OK(msr_filter_filter_range_count(f, &count));
    CHECK(count == 0);
    msr_filter_filter_free(f);
    msr_filter_policy_free(p);
}

static void nulls(void) {
    msr_filter_policy *p = parse("default deny\nallow rw 0x10\n");
    msr_filter_filter *f = pack(p);
    msr_filter_filter *fo = NULL;
    size_t n;
    bool b;
    uint32_t u;
    msr_filter_action a;
    msr_filter_rule rule;
    msr_filter_range_info r;
    msr_filter_explanation e;
    const msr_filter_kvm_msr_filter *kvm;
    const msr_filter_status NUL = MSR_FILTER_STATUS_NULL_ARGUMENT;
    (void)u;
    CHECK_STATUS(msr_filter_policy_new(0, NULL), NUL);
    CHECK_STATUS(msr_filter_policy_set_default_action(NULL, 0), NUL);
    CHECK_STATUS(msr_filter_policy_default_action(NULL, &a), NUL);
    CHECK_STATUS(msr_filter_policy_default_action(p, NULL), NUL);
    CHECK_STATUS(msr_filter_policy_rule_count(NULL, &n), NUL);
    CHECK_STATUS(msr_filter_policy_rule_count(p, NULL), NUL);
    CHECK_STATUS(msr_filter_policy_rule(NULL, 0, &rule), NUL);
    CHECK_STATUS(msr_filter_policy_rule(p, 0, NULL), NUL);
    CHECK_STATUS(msr_filter_policy_decide(NULL, 0, 1, &a), NUL);
    CHECK_STATUS(msr_filter_policy_decide(p, 0, 1, NULL), NUL);
    CHECK_STATUS(msr_filter_policy_pack(NULL, &fo), NUL);
    CHECK_STATUS(msr_filter_policy_pack(p, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_decide(NULL, 0, 1, &a), NUL);
    CHECK_ERROR_MENTIONS("`filter`");
    CHECK_STATUS(msr_filter_filter_decide(f, 0, 1, NULL), NUL);
    CHECK_ERROR_MENTIONS("`action_out`");
    CHECK_STATUS(msr_filter_filter_explain(NULL, 0, 1, &e), NUL);
    CHECK_STATUS(msr_filter_filter_explain(f, 0, 1, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_default_action(NULL, &a), NUL);
    CHECK_STATUS(msr_filter_filter_default_action(f, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_range_count(NULL, &n), NUL);
    CHECK_STATUS(msr_filter_filter_range_count(f, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_bitmap_bytes(NULL, &n), NUL);
    CHECK_STATUS(msr_filter_filter_bitmap_bytes(f, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_proven_minimal(NULL, &b), NUL);
    CHECK_STATUS(msr_filter_filter_proven_minimal(f, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_range(NULL, 0, &r), NUL);
    CHECK_STATUS(msr_filter_filter_range(f, 0, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_kvm_msr_filter(NULL, &kvm), NUL);
    CHECK_STATUS(msr_filter_filter_kvm_msr_filter(f, NULL), NUL);
    CHECK_STATUS(msr_filter_filter_from_kvm(NULL, &fo), NUL);
    CHECK_OK(msr_filter_filter_kvm_msr_filter(f, &kvm));
    CHECK_STATUS(msr_filter_filter_from_kvm(kvm, NULL), NUL);
    msr_filter_policy_free(NULL);
    msr_filter_filter_free(NULL);
    msr_filter_filter_free(f);
    msr_filter_policy_free(p);
}

int main(void) {
    statuses_and_messages();
    parsing();
    building();
    inspecting();
    nulls();
    DONE("test_policy");
}
