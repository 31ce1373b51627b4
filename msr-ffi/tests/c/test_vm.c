/* The VM path: msr_filter_vm_* on a VM fd the caller owns, with the ordering rule. Error paths
 * run everywhere; the real-kernel part needs /dev/kvm and prints SKIPPED without it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "check.h"

static void errors(void) {
    msr_filter_vm *vm = (msr_filter_vm *)1;
    CHECK_STATUS(msr_filter_vm_new(-1, 0, &vm), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK(vm == NULL);
    CHECK_ERROR_MENTIONS("vm_fd -1");
    CHECK_STATUS(msr_filter_vm_new(0, 8, &vm), MSR_FILTER_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(msr_filter_vm_new(0, 0, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    /* Not a VM: the ioctls fail (or /dev/kvm is missing): a KVM error, and no fd leaks. */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    CHECK_STATUS(msr_filter_vm_new(pipefd[0], 0, &vm), MSR_FILTER_STATUS_KVM_ERROR);
    close(pipefd[0]);
    close(pipefd[1]);

    CHECK_STATUS(msr_filter_vm_install(NULL, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_vm_remove_filter(NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_vm_set_exit_reasons(NULL, 4), MSR_FILTER_STATUS_NULL_ARGUMENT);
    uint32_t reasons;
    bool installed;
    CHECK_STATUS(msr_filter_vm_exit_reasons(NULL, &reasons), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_vm_filter_installed(NULL, &installed), MSR_FILTER_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(msr_filter_vm_shutdown(NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);
    msr_filter_vm_free(NULL);
}

static msr_filter_filter *filter_from(const char *text) {
    msr_filter_policy *p = NULL;
    CHECK_OK(msr_filter_policy_parse(text, strlen(text), &p, NULL, NULL));
    msr_filter_filter *f = NULL;
    CHECK_OK(msr_filter_policy_pack(p, &f));
    msr_filter_policy_free(p);
    return f;
}

static void on_the_kernel(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("SKIPPED: no /dev/kvm (test_vm ran its error paths only)\n");
        return;
    }
    int vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(vm_fd >= 0);
    msr_filter_vm *vm = NULL;
    CHECK_OK(msr_filter_vm_new(vm_fd, MSR_FILTER_EXIT_REASON_UNKNOWN, &vm));
    uint32_t reasons = 0;
    bool installed = true;
    CHECK_OK(msr_filter_vm_exit_reasons(vm, &reasons));
    CHECK(reasons == (MSR_FILTER_EXIT_REASON_FILTER | MSR_FILTER_EXIT_REASON_UNKNOWN));
    CHECK_OK(msr_filter_vm_filter_installed(vm, &installed));
    CHECK(!installed);
    /* Someone else may have installed a filter: FILTER cannot be dropped yet. */
    CHECK_STATUS(msr_filter_vm_set_exit_reasons(vm, 0), MSR_FILTER_STATUS_FILTER_EXIT_REQUIRED);
    CHECK_STATUS(msr_filter_vm_set_exit_reasons(vm, 16), MSR_FILTER_STATUS_INVALID_ARGUMENT);

    msr_filter_filter *f = filter_from("default allow\ndeny rw 0x474f4f00\n");
    CHECK_OK(msr_filter_vm_install(vm, f));
    msr_filter_filter_free(f); /* the kernel copied it */
    CHECK_OK(msr_filter_vm_filter_installed(vm, &installed));
    CHECK(installed);
    CHECK_STATUS(msr_filter_vm_set_exit_reasons(vm, MSR_FILTER_EXIT_REASON_UNKNOWN),
                 MSR_FILTER_STATUS_FILTER_EXIT_REQUIRED);
    CHECK_ERROR_MENTIONS("#GP");
    CHECK_STATUS(msr_filter_vm_install(vm, NULL), MSR_FILTER_STATUS_NULL_ARGUMENT);

    /* Removed: now the exits may go, and an install brings FILTER back first. */
    CHECK_OK(msr_filter_vm_remove_filter(vm));
    CHECK_OK(msr_filter_vm_filter_installed(vm, &installed));
    CHECK(!installed);
    CHECK_OK(msr_filter_vm_set_exit_reasons(vm, 0));
    CHECK_OK(msr_filter_vm_exit_reasons(vm, &reasons));
    CHECK(reasons == 0);
    f = filter_from("default deny\nallow rw 0x0-0x1fff\n");
    CHECK_OK(msr_filter_vm_install(vm, f));
    msr_filter_filter_free(f);
    CHECK_OK(msr_filter_vm_exit_reasons(vm, &reasons));
    CHECK(reasons & MSR_FILTER_EXIT_REASON_FILTER);

    /* The handle holds its own duplicate: the caller may close its fd. */
    CHECK(close(vm_fd) == 0);
    CHECK_OK(msr_filter_vm_remove_filter(vm));
    CHECK_OK(msr_filter_vm_shutdown(vm));

    /* A second owner of one VM, freed without an explicit shutdown. */
    vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(vm_fd >= 0);
    CHECK_OK(msr_filter_vm_new(vm_fd, 0, &vm));
    msr_filter_vm_free(vm);
    CHECK(close(vm_fd) == 0);
    close(kvm);
    printf("test_vm: ran on the real /dev/kvm\n");
}

int main(void) {
    errors();
    on_the_kernel();
    DONE("test_vm");
}
