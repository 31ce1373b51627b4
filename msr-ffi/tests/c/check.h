/* A minimal check harness for the C tests: each CHECK counts; the first failure prints and
 * exits 1. DONE() prints the closing line. */
#ifndef MSR_FILTER_TEST_CHECK_H
#define MSR_FILTER_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msr_filter.h"

static unsigned checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* A call's status must be `want`. */
#define CHECK_STATUS(call, want)                                                           \
    do {                                                                                   \
        msr_filter_status got_ = (call);                                                   \
        checks++;                                                                          \
        if (got_ != (want)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n",       \
                    __FILE__, __LINE__, #call, msr_filter_status_name(got_),               \
                    msr_filter_status_name(want), last_error());                           \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, MSR_FILTER_STATUS_OK)

/* The thread's last error message (static buffer). */
static const char *last_error(void) {
    static char buf[1024];
    size_t len = 0;
    if (msr_filter_last_error_message(buf, sizeof buf, &len) != MSR_FILTER_STATUS_OK) {
        return "(message too long)";
    }
    return buf;
}

#define CHECK_ERROR_MENTIONS(text) CHECK(strstr(last_error(), (text)) != NULL)

#define DONE(name)                                                        \
    do {                                                                  \
        printf("%s: %u checks passed\n", (name), checks);                 \
        return 0;                                                         \
    } while (0)

#endif
