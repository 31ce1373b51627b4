/* Deliberate misuse, to show the sanitizers are live in the C tests: `leak` never frees a
 * policy (LeakSanitizer), `uaf` reads a filter's exported bitmap after freeing the filter
 * (AddressSanitizer). tests/c_api.rs expects each to fail with the sanitizer's report. */
#include <stdio.h>
#include <string.h>

#include "msr_filter.h"

int main(int argc, char **argv) {
    const char text[] = "default allow\ndeny rw 0x474f4f00\n";
    msr_filter_policy *p = NULL;
    if (argc != 2 || msr_filter_policy_parse(text, sizeof text - 1, &p, NULL, NULL) != MSR_FILTER_STATUS_OK) {
        return 2;
    }
    if (strcmp(argv[1], "leak") == 0) {
        return 0; /* p leaks */
    }
    msr_filter_filter *f = NULL;
    const msr_filter_kvm_msr_filter *kvm = NULL;
    if (msr_filter_policy_pack(p, &f) != MSR_FILTER_STATUS_OK ||
        msr_filter_filter_kvm_msr_filter(f, &kvm) != MSR_FILTER_STATUS_OK) {
        return 2;
    }
    msr_filter_policy_free(p);
    const volatile uint8_t *bitmap = kvm->ranges[0].bitmap;
    msr_filter_filter_free(f);
    printf("%u\n", bitmap[0]); /* use after free */
    return 0;
}
