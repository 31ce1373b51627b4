/* A tiny 16-bit real-mode guest on raw KVM ioctls, shared by the C examples (no library calls
 * here: this is the VMM's own code).
 *
 * Guest memory: 64 KiB at guest physical address 0, filled with hlt.
 *   0x0000  IVT: vector 13 (#GP) -> 0000:0x3000, every other vector -> 0000:0x3100
 *   0x1000  the program (see guest_program)
 *   0x3000  #GP handler: skip the 2-byte rdmsr/wrmsr, report on port 0x10, iret
 *   0x3100  any other exception: report on port 0x11, hlt
 * The program reports each value it read with `out 0x20, eax`. */
#ifndef MSR_FILTER_EXAMPLE_GUEST_H
#define MSR_FILTER_EXAMPLE_GUEST_H

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef EXAMPLE_NAME
#define EXAMPLE_NAME "example"
#endif

#define GUEST_MEM_SIZE 0x10000
#define GUEST_CODE 0x1000
#define PORT_GP 0x10
#define PORT_OTHER_VECTOR 0x11
#define PORT_VALUE 0x20

#define DIE(...)                                   \
    do {                                           \
        fprintf(stderr, EXAMPLE_NAME ": " __VA_ARGS__); \
        fprintf(stderr, "\n");                     \
        exit(1);                                   \
    } while (0)

/* Appends bytes to the guest program. */
struct code {
    uint8_t *at;
};

static inline void emit(struct code *c, const uint8_t *bytes, size_t n) {
    memcpy(c->at, bytes, n);
    c->at += n;
}

static inline void emit_mov_ecx(struct code *c, uint32_t v) {
    uint8_t b[] = {0x66, 0xb9, (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    emit(c, b, sizeof b);
}

/* rdmsr of `index`, then `out PORT_VALUE, eax`. */
static inline void emit_rdmsr_report(struct code *c, uint32_t index) {
    static const uint8_t rdmsr_out[] = {0x0f, 0x32, 0x66, 0xe7, PORT_VALUE};
    emit_mov_ecx(c, index);
    emit(c, rdmsr_out, sizeof rdmsr_out);
}

/* rdmsr of `index`, result not reported. */
static inline void emit_rdmsr(struct code *c, uint32_t index) {
    static const uint8_t rdmsr[] = {0x0f, 0x32};
    emit_mov_ecx(c, index);
    emit(c, rdmsr, sizeof rdmsr);
}

/* wrmsr of `index` with edx:eax = 0:ebx (each vCPU gets its own ebx). */
static inline void emit_wrmsr_ebx(struct code *c, uint32_t index) {
    static const uint8_t wrmsr_ebx[] = {0x66, 0x89, 0xd8, 0x66, 0x31, 0xd2, 0x0f, 0x30};
    emit_mov_ecx(c, index);
    emit(c, wrmsr_ebx, sizeof wrmsr_ebx);
}

/* `count` rdmsr of `index` in a loop (si counts), results not reported. */
static inline void emit_rdmsr_loop(struct code *c, uint32_t index, uint16_t count) {
    uint8_t mov_si[] = {0xbe, (uint8_t)count, (uint8_t)(count >> 8)};
    static const uint8_t loop[] = {0x0f, 0x32, 0x4e, 0x75, 0xfb}; /* rdmsr; dec si; jnz -5 */
    emit(c, mov_si, sizeof mov_si);
    emit_mov_ecx(c, index);
    emit(c, loop, sizeof loop);
}

/* Maps guest memory with the IVT and handlers, registers it as slot 0; returns the code area. */
static uint8_t *guest_memory(int vm) {
    uint8_t *mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        DIE("mmap: %s", strerror(errno));
    }
    memset(mem, 0xf4, GUEST_MEM_SIZE); /* hlt */
    for (unsigned v = 0; v < 256; v++) {
        uint16_t handler = v == 13 ? 0x3000 : 0x3100;
        mem[v * 4] = (uint8_t)handler;
        mem[v * 4 + 1] = (uint8_t)(handler >> 8);
        mem[v * 4 + 2] = 0;
        mem[v * 4 + 3] = 0;
    }
    /* push bp; mov bp, sp; add word [bp+2], 2; pop bp; mov al, 13; out PORT_GP, al; iret */
    static const uint8_t gp[] = {0x55, 0x89, 0xe5, 0x83, 0x46, 0x02, 0x02, 0x5d, 0xb0, 0x0d, 0xe6, PORT_GP, 0xcf};
    memcpy(mem + 0x3000, gp, sizeof gp);
    static const uint8_t other[] = {0xb0, 0xff, 0xe6, PORT_OTHER_VECTOR, 0xf4};
    memcpy(mem + 0x3100, other, sizeof other);
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = GUEST_MEM_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        DIE("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
    }
    return mem;
}

/* Creates vCPU `id` in real mode at GUEST_CODE with its own stack and ebx; maps its kvm_run. */
static inline int guest_vcpu(int kvm, int vm, unsigned id, uint32_t ebx, struct kvm_run **run) {
    int fd = ioctl(vm, KVM_CREATE_VCPU, id);
    if (fd < 0) {
        DIE("KVM_CREATE_VCPU: %s", strerror(errno));
    }
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < (int)sizeof(struct kvm_run)) {
        DIE("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
    }
    *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*run == MAP_FAILED) {
        DIE("mmap kvm_run: %s", strerror(errno));
    }
    struct kvm_sregs sregs;
    if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0) {
        DIE("KVM_GET_SREGS: %s", strerror(errno));
    }
    struct kvm_segment *segs[] = {&sregs.cs, &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
    for (size_t i = 0; i < sizeof segs / sizeof segs[0]; i++) {
        segs[i]->base = 0;
        segs[i]->selector = 0;
        segs[i]->limit = 0xffff;
    }
    sregs.cr0 &= ~1ull;
    if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0) {
        DIE("KVM_SET_SREGS: %s", strerror(errno));
    }
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = GUEST_CODE;
    regs.rsp = 0x8000 - 0x1000 * id;
    regs.rflags = 2;
    regs.rbx = ebx;
    if (ioctl(fd, KVM_SET_REGS, &regs) < 0) {
        DIE("KVM_SET_REGS: %s", strerror(errno));
    }
    return fd;
}

/* KVM_RUN, retried on EINTR/EAGAIN. */
static inline void guest_run(int vcpu) {
    while (ioctl(vcpu, KVM_RUN, 0) < 0) {
        if (errno != EINTR && errno != EAGAIN) {
            DIE("KVM_RUN: %s", strerror(errno));
        }
    }
}

/* The 32-bit value of an `out PORT, eax` exit. */
static inline uint32_t io_value(const struct kvm_run *run) {
    uint32_t v = 0;
    memcpy(&v, (const uint8_t *)run + run->io.data_offset, run->io.size < 4 ? run->io.size : 4);
    return v;
}

#endif
