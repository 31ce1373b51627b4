//! Well-known x86 MSR names and their indices.
//!
//! Names follow Linux's `arch/x86/include/asm/msr-index.h`,
//! `arch/x86/include/uapi/asm/kvm_para.h` and `include/hyperv/hvgdk_mini.h`
//! spelling, upper-cased and with Linux's leading `MSR_` dropped
//! (`MSR_IA32_TSC` -> `IA32_TSC`, `MSR_EFER` -> `EFER`,
//! `MSR_KVM_SYSTEM_TIME_NEW` -> `KVM_SYSTEM_TIME_NEW`). Hyper-V names keep
//! their `HV_X64_MSR_` prefix. The x2APIC names are the Intel SDM ones
//! (`IA32_X2APIC_*`), whose indices are `0x800 + (xAPIC offset >> 4)`.
//!
//! Lookups never allocate: names are compared case-insensitively, ASCII byte
//! by byte.

/// One named MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrName {
    /// The MSR index (the value loaded into ECX for RDMSR/WRMSR).
    pub index: u32,
    /// Canonical name, upper-case ASCII `[A-Z0-9_]`.
    pub name: &'static str,
    /// Short description.
    pub summary: &'static str,
}

const fn msr(index: u32, name: &'static str, summary: &'static str) -> MsrName {
    MsrName {
        index,
        name,
        summary,
    }
}

/// The table, sorted by index (ascending, no duplicate index; aliases go in
/// [`ALIASES`]).
#[rustfmt::skip]
pub static MSR_NAMES: &[MsrName] = &[
    // Intel architectural and common MSRs.
    msr(0x0000_0010, "IA32_TSC", "Time-stamp counter"),
    msr(0x0000_0011, "KVM_WALL_CLOCK", "KVM wall clock GPA (legacy)"),
    msr(0x0000_0012, "KVM_SYSTEM_TIME", "KVM per-vCPU system time GPA (legacy)"),
    msr(0x0000_0017, "IA32_PLATFORM_ID", "Platform ID (processor flags)"),
    msr(0x0000_001b, "IA32_APICBASE", "Local APIC base address and enables"),
    msr(0x0000_0033, "TEST_CTRL", "Test control (split-lock detection)"),
    msr(0x0000_0034, "SMI_COUNT", "Number of SMIs since reset"),
    msr(0x0000_0035, "CORE_THREAD_COUNT", "Enabled core and thread counts"),
    msr(0x0000_003a, "IA32_FEAT_CTL", "Feature control (VMX/SGX enables, lock)"),
    msr(0x0000_003b, "IA32_TSC_ADJUST", "TSC adjustment"),
    msr(0x0000_0048, "IA32_SPEC_CTRL", "Speculation control (IBRS, STIBP, SSBD)"),
    msr(0x0000_0049, "IA32_PRED_CMD", "Prediction command (IBPB)"),
    msr(0x0000_004e, "PPIN_CTL", "Protected processor inventory number control"),
    msr(0x0000_004f, "PPIN", "Protected processor inventory number"),
    msr(0x0000_0079, "IA32_UCODE_WRITE", "Microcode update trigger"),
    msr(0x0000_008b, "IA32_UCODE_REV", "Microcode revision"),
    msr(0x0000_008c, "IA32_SGXLEPUBKEYHASH0", "SGX launch enclave key hash, bits 63:0"),
    msr(0x0000_008d, "IA32_SGXLEPUBKEYHASH1", "SGX launch enclave key hash, bits 127:64"),
    msr(0x0000_008e, "IA32_SGXLEPUBKEYHASH2", "SGX launch enclave key hash, bits 191:128"),
    msr(0x0000_008f, "IA32_SGXLEPUBKEYHASH3", "SGX launch enclave key hash, bits 255:192"),
    msr(0x0000_009b, "IA32_SMM_MONITOR_CTL", "SMM monitor configuration"),
    msr(0x0000_009e, "IA32_SMBASE", "SMRAM base address"),
    msr(0x0000_00bd, "IA32_XAPIC_DISABLE_STATUS", "x2APIC mode lock status"),
    msr(0x0000_00c1, "IA32_PERFCTR0", "General-purpose performance counter 0"),
    msr(0x0000_00c2, "IA32_PERFCTR1", "General-purpose performance counter 1"),
    msr(0x0000_00ce, "PLATFORM_INFO", "Platform information (ratios, CPUID faulting)"),
    msr(0x0000_00cf, "IA32_CORE_CAPS", "Core capabilities enumeration"),
    msr(0x0000_00e1, "IA32_UMWAIT_CONTROL", "UMWAIT/TPAUSE control"),
    msr(0x0000_00e2, "PKG_CST_CONFIG_CONTROL", "Package C-state configuration"),
    msr(0x0000_00e7, "IA32_MPERF", "Maximum-performance frequency clock count"),
    msr(0x0000_00e8, "IA32_APERF", "Actual-performance frequency clock count"),
    msr(0x0000_00fe, "MTRRCAP", "MTRR capabilities"),
    msr(0x0000_010a, "IA32_ARCH_CAPABILITIES", "Speculation-related capability bits"),
    msr(0x0000_010b, "IA32_FLUSH_CMD", "L1D flush command"),
    msr(0x0000_010f, "TSX_FORCE_ABORT", "TSX force abort control"),
    msr(0x0000_0122, "IA32_TSX_CTRL", "TSX control (RTM disable, CPUID clear)"),
    msr(0x0000_0123, "IA32_MCU_OPT_CTRL", "Microcode optional mitigation control"),
    msr(0x0000_0140, "MISC_FEATURES_ENABLES", "Misc features (CPUID faulting)"),
    msr(0x0000_0174, "IA32_SYSENTER_CS", "SYSENTER target CS"),
    msr(0x0000_0175, "IA32_SYSENTER_ESP", "SYSENTER target ESP"),
    msr(0x0000_0176, "IA32_SYSENTER_EIP", "SYSENTER target EIP"),
    msr(0x0000_0179, "IA32_MCG_CAP", "Machine-check global capabilities"),
    msr(0x0000_017a, "IA32_MCG_STATUS", "Machine-check global status"),
    msr(0x0000_017b, "IA32_MCG_CTL", "Machine-check global control"),
    msr(0x0000_0186, "P6_EVNTSEL0", "Performance event select 0"),
    msr(0x0000_0187, "P6_EVNTSEL1", "Performance event select 1"),
    msr(0x0000_0198, "IA32_PERF_STATUS", "Current performance state"),
    msr(0x0000_0199, "IA32_PERF_CTL", "Requested performance state"),
    msr(0x0000_019a, "IA32_THERM_CONTROL", "Clock modulation control"),
    msr(0x0000_019b, "IA32_THERM_INTERRUPT", "Thermal interrupt control"),
    msr(0x0000_019c, "IA32_THERM_STATUS", "Thermal status"),
    msr(0x0000_01a0, "IA32_MISC_ENABLE", "Miscellaneous processor feature enables"),
    msr(0x0000_01a2, "IA32_TEMPERATURE_TARGET", "Thermal throttling target temperature"),
    msr(0x0000_01a4, "MISC_FEATURE_CONTROL", "Hardware prefetcher control"),
    msr(0x0000_01b0, "IA32_ENERGY_PERF_BIAS", "Energy/performance bias hint"),
    msr(0x0000_01b1, "IA32_PACKAGE_THERM_STATUS", "Package thermal status"),
    msr(0x0000_01b2, "IA32_PACKAGE_THERM_INTERRUPT", "Package thermal interrupt control"),
    msr(0x0000_01c4, "IA32_XFD", "Extended feature disable (AMX)"),
    msr(0x0000_01c5, "IA32_XFD_ERR", "Extended feature disable error"),
    msr(0x0000_01d9, "IA32_DEBUGCTLMSR", "Debug control (LBR, BTF)"),
    msr(0x0000_01fc, "IA32_POWER_CTL", "Power control"),
    msr(0x0000_0250, "MTRRFIX64K_00000", "Fixed-range MTRR 0x00000-0x7FFFF"),
    msr(0x0000_0277, "IA32_CR_PAT", "Page attribute table"),
    msr(0x0000_02ff, "MTRRDEFTYPE", "MTRR default memory type"),
    msr(0x0000_0309, "CORE_PERF_FIXED_CTR0", "Fixed-function counter 0 (instructions)"),
    msr(0x0000_030a, "CORE_PERF_FIXED_CTR1", "Fixed-function counter 1 (core cycles)"),
    msr(0x0000_030b, "CORE_PERF_FIXED_CTR2", "Fixed-function counter 2 (reference cycles)"),
    msr(0x0000_0345, "IA32_PERF_CAPABILITIES", "Performance monitoring capabilities"),
    msr(0x0000_038d, "CORE_PERF_FIXED_CTR_CTRL", "Fixed-function counter control"),
    msr(0x0000_038e, "CORE_PERF_GLOBAL_STATUS", "Global performance counter status"),
    msr(0x0000_038f, "CORE_PERF_GLOBAL_CTRL", "Global performance counter enable"),
    msr(0x0000_0390, "CORE_PERF_GLOBAL_OVF_CTRL", "Global performance counter overflow clear"),
    msr(0x0000_03f1, "IA32_PEBS_ENABLE", "PEBS enable"),
    msr(0x0000_03fc, "CORE_C3_RESIDENCY", "Core C3 residency counter"),
    msr(0x0000_03fd, "CORE_C6_RESIDENCY", "Core C6 residency counter"),
    msr(0x0000_03fe, "CORE_C7_RESIDENCY", "Core C7 residency counter"),
    msr(0x0000_0400, "IA32_MC0_CTL", "Machine-check bank 0 control"),
    msr(0x0000_0401, "IA32_MC0_STATUS", "Machine-check bank 0 status"),
    msr(0x0000_0402, "IA32_MC0_ADDR", "Machine-check bank 0 address"),
    msr(0x0000_0403, "IA32_MC0_MISC", "Machine-check bank 0 miscellaneous"),
    // VMX capability reporting.
    msr(0x0000_0480, "IA32_VMX_BASIC", "VMX basic information"),
    msr(0x0000_0481, "IA32_VMX_PINBASED_CTLS", "VMX pin-based controls capability"),
    msr(0x0000_0482, "IA32_VMX_PROCBASED_CTLS", "VMX primary processor-based controls"),
    msr(0x0000_0483, "IA32_VMX_EXIT_CTLS", "VMX VM-exit controls capability"),
    msr(0x0000_0484, "IA32_VMX_ENTRY_CTLS", "VMX VM-entry controls capability"),
    msr(0x0000_0485, "IA32_VMX_MISC", "VMX miscellaneous data"),
    msr(0x0000_0486, "IA32_VMX_CR0_FIXED0", "VMX CR0 bits fixed to 1"),
    msr(0x0000_0487, "IA32_VMX_CR0_FIXED1", "VMX CR0 bits allowed to be 1"),
    msr(0x0000_0488, "IA32_VMX_CR4_FIXED0", "VMX CR4 bits fixed to 1"),
    msr(0x0000_0489, "IA32_VMX_CR4_FIXED1", "VMX CR4 bits allowed to be 1"),
    msr(0x0000_048a, "IA32_VMX_VMCS_ENUM", "VMCS field index enumeration"),
    msr(0x0000_048b, "IA32_VMX_PROCBASED_CTLS2", "VMX secondary processor-based controls"),
    msr(0x0000_048c, "IA32_VMX_EPT_VPID_CAP", "VMX EPT and VPID capabilities"),
    msr(0x0000_048d, "IA32_VMX_TRUE_PINBASED_CTLS", "VMX true pin-based controls"),
    msr(0x0000_048e, "IA32_VMX_TRUE_PROCBASED_CTLS", "VMX true processor-based controls"),
    msr(0x0000_048f, "IA32_VMX_TRUE_EXIT_CTLS", "VMX true VM-exit controls"),
    msr(0x0000_0490, "IA32_VMX_TRUE_ENTRY_CTLS", "VMX true VM-entry controls"),
    msr(0x0000_0491, "IA32_VMX_VMFUNC", "VMX VM-function controls"),
    msr(0x0000_0492, "IA32_VMX_PROCBASED_CTLS3", "VMX tertiary processor-based controls"),
    msr(0x0000_04c1, "IA32_PMC0", "Full-width general-purpose counter 0"),
    msr(0x0000_04d0, "IA32_MCG_EXT_CTL", "Machine-check extended control (LMCE)"),
    // Intel Processor Trace.
    msr(0x0000_0560, "IA32_RTIT_OUTPUT_BASE", "Processor Trace output base"),
    msr(0x0000_0561, "IA32_RTIT_OUTPUT_MASK", "Processor Trace output mask/pointers"),
    msr(0x0000_0570, "IA32_RTIT_CTL", "Processor Trace control"),
    msr(0x0000_0571, "IA32_RTIT_STATUS", "Processor Trace status"),
    msr(0x0000_0572, "IA32_RTIT_CR3_MATCH", "Processor Trace CR3 filter"),
    msr(0x0000_0600, "IA32_DS_AREA", "Debug store save area address"),
    // RAPL (Intel).
    msr(0x0000_0606, "RAPL_POWER_UNIT", "RAPL power, energy and time units"),
    msr(0x0000_0610, "PKG_POWER_LIMIT", "Package RAPL power limit"),
    msr(0x0000_0611, "PKG_ENERGY_STATUS", "Package energy consumed"),
    msr(0x0000_0613, "PKG_PERF_STATUS", "Package RAPL throttled time"),
    msr(0x0000_0614, "PKG_POWER_INFO", "Package power range information"),
    msr(0x0000_0618, "DRAM_POWER_LIMIT", "DRAM RAPL power limit"),
    msr(0x0000_0619, "DRAM_ENERGY_STATUS", "DRAM energy consumed"),
    msr(0x0000_061b, "DRAM_PERF_STATUS", "DRAM RAPL throttled time"),
    msr(0x0000_061c, "DRAM_POWER_INFO", "DRAM power range information"),
    msr(0x0000_0638, "PP0_POWER_LIMIT", "Core (PP0) RAPL power limit"),
    msr(0x0000_0639, "PP0_ENERGY_STATUS", "Core (PP0) energy consumed"),
    msr(0x0000_063a, "PP0_POLICY", "Core (PP0) balance policy"),
    msr(0x0000_063b, "PP0_PERF_STATUS", "Core (PP0) RAPL throttled time"),
    msr(0x0000_0640, "PP1_POWER_LIMIT", "Uncore/graphics (PP1) RAPL power limit"),
    msr(0x0000_0641, "PP1_ENERGY_STATUS", "Uncore/graphics (PP1) energy consumed"),
    msr(0x0000_0642, "PP1_POLICY", "Uncore/graphics (PP1) balance policy"),
    msr(0x0000_064d, "PLATFORM_ENERGY_STATUS", "Platform (PSys) energy consumed"),
    msr(0x0000_064e, "PPERF", "Productive performance count"),
    msr(0x0000_064f, "PERF_LIMIT_REASONS", "Frequency clipping reasons"),
    msr(0x0000_0660, "CORE_C1_RES", "Core C1 residency counter"),
    // Control-flow enforcement.
    msr(0x0000_06a0, "IA32_U_CET", "User-mode CET configuration"),
    msr(0x0000_06a2, "IA32_S_CET", "Supervisor-mode CET configuration"),
    msr(0x0000_06a4, "IA32_PL0_SSP", "Ring-0 shadow stack pointer"),
    msr(0x0000_06a5, "IA32_PL1_SSP", "Ring-1 shadow stack pointer"),
    msr(0x0000_06a6, "IA32_PL2_SSP", "Ring-2 shadow stack pointer"),
    msr(0x0000_06a7, "IA32_PL3_SSP", "Ring-3 shadow stack pointer"),
    msr(0x0000_06a8, "IA32_INT_SSP_TAB", "Interrupt shadow stack table address"),
    msr(0x0000_06e0, "IA32_TSC_DEADLINE", "TSC-deadline timer target"),
    msr(0x0000_06e1, "IA32_PKRS", "Supervisor protection-key rights"),
    // Hardware P-states.
    msr(0x0000_0770, "PM_ENABLE", "HWP enable"),
    msr(0x0000_0771, "HWP_CAPABILITIES", "HWP performance range enumeration"),
    msr(0x0000_0772, "HWP_REQUEST_PKG", "HWP package-level request"),
    msr(0x0000_0773, "HWP_INTERRUPT", "HWP notification control"),
    msr(0x0000_0774, "HWP_REQUEST", "HWP performance request"),
    msr(0x0000_0777, "HWP_STATUS", "HWP status"),
    // x2APIC (0x800 + xAPIC MMIO offset / 16).
    msr(0x0000_0802, "IA32_X2APIC_APICID", "x2APIC ID"),
    msr(0x0000_0803, "IA32_X2APIC_VERSION", "x2APIC version"),
    msr(0x0000_0808, "IA32_X2APIC_TPR", "x2APIC task priority"),
    msr(0x0000_080a, "IA32_X2APIC_PPR", "x2APIC processor priority"),
    msr(0x0000_080b, "IA32_X2APIC_EOI", "x2APIC end of interrupt"),
    msr(0x0000_080d, "IA32_X2APIC_LDR", "x2APIC logical destination"),
    msr(0x0000_080f, "IA32_X2APIC_SIVR", "x2APIC spurious interrupt vector"),
    msr(0x0000_0810, "IA32_X2APIC_ISR0", "x2APIC in-service bits 31:0"),
    msr(0x0000_0818, "IA32_X2APIC_TMR0", "x2APIC trigger mode bits 31:0"),
    msr(0x0000_0820, "IA32_X2APIC_IRR0", "x2APIC interrupt request bits 31:0"),
    msr(0x0000_0828, "IA32_X2APIC_ESR", "x2APIC error status"),
    msr(0x0000_082f, "IA32_X2APIC_LVT_CMCI", "x2APIC LVT corrected machine check"),
    msr(0x0000_0830, "IA32_X2APIC_ICR", "x2APIC interrupt command"),
    msr(0x0000_0832, "IA32_X2APIC_LVT_TIMER", "x2APIC LVT timer"),
    msr(0x0000_0833, "IA32_X2APIC_LVT_THERMAL", "x2APIC LVT thermal sensor"),
    msr(0x0000_0834, "IA32_X2APIC_LVT_PMI", "x2APIC LVT performance monitor"),
    msr(0x0000_0835, "IA32_X2APIC_LVT_LINT0", "x2APIC LVT LINT0"),
    msr(0x0000_0836, "IA32_X2APIC_LVT_LINT1", "x2APIC LVT LINT1"),
    msr(0x0000_0837, "IA32_X2APIC_LVT_ERROR", "x2APIC LVT error"),
    msr(0x0000_0838, "IA32_X2APIC_INIT_COUNT", "x2APIC timer initial count"),
    msr(0x0000_0839, "IA32_X2APIC_CUR_COUNT", "x2APIC timer current count"),
    msr(0x0000_083e, "IA32_X2APIC_DIV_CONF", "x2APIC timer divide configuration"),
    msr(0x0000_083f, "IA32_X2APIC_SELF_IPI", "x2APIC self IPI"),
    msr(0x0000_0d90, "IA32_BNDCFGS", "MPX supervisor bounds configuration"),
    msr(0x0000_0d93, "IA32_PASID", "Process address space ID (ENQCMD)"),
    msr(0x0000_0da0, "IA32_XSS", "XSAVES supervisor state-component mask"),
    msr(0x0000_17d0, "IA32_HW_FEEDBACK_PTR", "Hardware feedback interface table address"),
    msr(0x0000_17d1, "IA32_HW_FEEDBACK_CONFIG", "Hardware feedback interface configuration"),
    // Hyper-V synthetic MSRs.
    msr(0x4000_0000, "HV_X64_MSR_GUEST_OS_ID", "Hyper-V guest OS identity"),
    msr(0x4000_0001, "HV_X64_MSR_HYPERCALL", "Hyper-V hypercall page GPA and enable"),
    msr(0x4000_0002, "HV_X64_MSR_VP_INDEX", "Hyper-V virtual processor index"),
    msr(0x4000_0003, "HV_X64_MSR_RESET", "Hyper-V system reset"),
    msr(0x4000_0010, "HV_X64_MSR_VP_RUNTIME", "Hyper-V virtual processor run time"),
    msr(0x4000_0020, "HV_X64_MSR_TIME_REF_COUNT", "Hyper-V partition reference counter"),
    msr(0x4000_0021, "HV_X64_MSR_REFERENCE_TSC", "Hyper-V reference TSC page"),
    msr(0x4000_0022, "HV_X64_MSR_TSC_FREQUENCY", "Hyper-V TSC frequency"),
    msr(0x4000_0023, "HV_X64_MSR_APIC_FREQUENCY", "Hyper-V APIC timer frequency"),
    msr(0x4000_0070, "HV_X64_MSR_EOI", "Hyper-V virtual APIC end of interrupt"),
    msr(0x4000_0071, "HV_X64_MSR_ICR", "Hyper-V virtual APIC interrupt command"),
    msr(0x4000_0072, "HV_X64_MSR_TPR", "Hyper-V virtual APIC task priority"),
    msr(0x4000_0073, "HV_X64_MSR_VP_ASSIST_PAGE", "Hyper-V VP assist page"),
    msr(0x4000_0080, "HV_X64_MSR_SCONTROL", "Hyper-V SynIC control"),
    msr(0x4000_0081, "HV_X64_MSR_SVERSION", "Hyper-V SynIC version"),
    msr(0x4000_0082, "HV_X64_MSR_SIEFP", "Hyper-V SynIC event flags page"),
    msr(0x4000_0083, "HV_X64_MSR_SIMP", "Hyper-V SynIC message page"),
    msr(0x4000_0084, "HV_X64_MSR_EOM", "Hyper-V SynIC end of message"),
    msr(0x4000_0090, "HV_X64_MSR_SINT0", "Hyper-V SynIC interrupt source 0"),
    msr(0x4000_00b0, "HV_X64_MSR_STIMER0_CONFIG", "Hyper-V synthetic timer 0 config"),
    msr(0x4000_00b1, "HV_X64_MSR_STIMER0_COUNT", "Hyper-V synthetic timer 0 count"),
    msr(0x4000_00f0, "HV_X64_MSR_GUEST_IDLE", "Hyper-V guest idle"),
    msr(0x4000_0100, "HV_X64_MSR_CRASH_P0", "Hyper-V guest crash parameter 0"),
    msr(0x4000_0101, "HV_X64_MSR_CRASH_P1", "Hyper-V guest crash parameter 1"),
    msr(0x4000_0102, "HV_X64_MSR_CRASH_P2", "Hyper-V guest crash parameter 2"),
    msr(0x4000_0103, "HV_X64_MSR_CRASH_P3", "Hyper-V guest crash parameter 3"),
    msr(0x4000_0104, "HV_X64_MSR_CRASH_P4", "Hyper-V guest crash parameter 4"),
    msr(0x4000_0105, "HV_X64_MSR_CRASH_CTL", "Hyper-V guest crash control"),
    msr(0x4000_0106, "HV_X64_MSR_REENLIGHTENMENT_CONTROL", "Hyper-V reenlightenment control"),
    msr(0x4000_0107, "HV_X64_MSR_TSC_EMULATION_CONTROL", "Hyper-V TSC emulation control"),
    msr(0x4000_0108, "HV_X64_MSR_TSC_EMULATION_STATUS", "Hyper-V TSC emulation status"),
    msr(0x4000_0118, "HV_X64_MSR_TSC_INVARIANT_CONTROL", "Hyper-V invariant TSC exposure"),
    // KVM paravirtual MSRs.
    msr(0x4b56_4d00, "KVM_WALL_CLOCK_NEW", "KVM wall clock GPA"),
    msr(0x4b56_4d01, "KVM_SYSTEM_TIME_NEW", "KVM per-vCPU system time GPA"),
    msr(0x4b56_4d02, "KVM_ASYNC_PF_EN", "KVM async page fault enable"),
    msr(0x4b56_4d03, "KVM_STEAL_TIME", "KVM steal time area GPA"),
    msr(0x4b56_4d04, "KVM_PV_EOI_EN", "KVM paravirtual EOI enable"),
    msr(0x4b56_4d05, "KVM_POLL_CONTROL", "KVM host-side halt polling control"),
    msr(0x4b56_4d06, "KVM_ASYNC_PF_INT", "KVM async page fault interrupt vector"),
    msr(0x4b56_4d07, "KVM_ASYNC_PF_ACK", "KVM async page fault acknowledge"),
    msr(0x4b56_4d08, "KVM_MIGRATION_CONTROL", "KVM guest migration readiness"),
    // AMD64 / x86-64 MSRs.
    msr(0xc000_0080, "EFER", "Extended feature enables (SCE, LME, NXE, SVME)"),
    msr(0xc000_0081, "STAR", "SYSCALL/SYSRET segment selectors (legacy target)"),
    msr(0xc000_0082, "LSTAR", "SYSCALL target RIP in 64-bit mode"),
    msr(0xc000_0083, "CSTAR", "SYSCALL target RIP in compatibility mode"),
    msr(0xc000_0084, "SYSCALL_MASK", "RFLAGS mask applied on SYSCALL"),
    msr(0xc000_00e9, "F17H_IRPERF", "Instructions retired counter"),
    msr(0xc000_0100, "FS_BASE", "64-bit FS segment base"),
    msr(0xc000_0101, "GS_BASE", "64-bit GS segment base"),
    msr(0xc000_0102, "KERNEL_GS_BASE", "GS base swapped in by SWAPGS"),
    msr(0xc000_0103, "TSC_AUX", "Auxiliary TSC value (RDTSCP/RDPID)"),
    msr(0xc000_0104, "AMD64_TSC_RATIO", "Guest TSC frequency ratio"),
    msr(0xc000_010e, "AMD64_LBR_SELECT", "LBR filtering selection"),
    msr(0xc000_010f, "AMD_DBG_EXTN_CFG", "Debug extension configuration (LBRv2)"),
    msr(0xc000_0300, "AMD64_PERF_CNTR_GLOBAL_STATUS", "Global performance counter status"),
    msr(0xc000_0301, "AMD64_PERF_CNTR_GLOBAL_CTL", "Global performance counter control"),
    msr(0xc000_0302, "AMD64_PERF_CNTR_GLOBAL_STATUS_CLR", "Global counter status clear"),
    msr(0xc001_0000, "K7_EVNTSEL0", "Legacy performance event select 0"),
    msr(0xc001_0004, "K7_PERFCTR0", "Legacy performance counter 0"),
    msr(0xc001_0010, "AMD64_SYSCFG", "System configuration (memory encryption)"),
    msr(0xc001_0015, "K7_HWCR", "Hardware configuration"),
    msr(0xc001_001a, "K8_TOP_MEM1", "Top of memory below 4 GiB"),
    msr(0xc001_001d, "K8_TOP_MEM2", "Top of memory above 4 GiB"),
    msr(0xc001_001f, "AMD64_NB_CFG", "Northbridge configuration"),
    msr(0xc001_0020, "AMD64_PATCH_LOADER", "Microcode patch loader"),
    msr(0xc001_0058, "FAM10H_MMIO_CONF_BASE", "PCI MMIO configuration space base"),
    msr(0xc001_0062, "AMD_PERF_CTL", "P-state control"),
    msr(0xc001_0063, "AMD_PERF_STATUS", "P-state status"),
    msr(0xc001_0064, "AMD_PSTATE_DEF_BASE", "P-state 0 definition"),
    msr(0xc001_0112, "K8_TSEG_ADDR", "SMM TSEG base address"),
    msr(0xc001_0113, "K8_TSEG_MASK", "SMM TSEG address mask"),
    msr(0xc001_0114, "VM_CR", "SVM control (SVMDIS, lock)"),
    msr(0xc001_0115, "VM_IGNNE", "SVM IGNNE control"),
    msr(0xc001_0117, "VM_HSAVE_PA", "SVM host state-save area PA"),
    msr(0xc001_011b, "AMD64_SVM_AVIC_DOORBELL", "AVIC doorbell"),
    msr(0xc001_011e, "AMD64_VM_PAGE_FLUSH", "SEV VM page flush"),
    msr(0xc001_011f, "AMD64_VIRT_SPEC_CTRL", "Virtualized speculation control (SSBD)"),
    msr(0xc001_0130, "AMD64_SEV_ES_GHCB", "SEV-ES guest-hypervisor communication block"),
    msr(0xc001_0131, "AMD64_SEV", "SEV/SEV-ES/SNP status"),
    msr(0xc001_0140, "AMD64_OSVW_ID_LENGTH", "OS visible workaround ID length"),
    msr(0xc001_0141, "AMD64_OSVW_STATUS", "OS visible workaround status"),
    msr(0xc001_0200, "F15H_PERF_CTL", "Core performance event select 0"),
    msr(0xc001_0201, "F15H_PERF_CTR", "Core performance counter 0"),
    msr(0xc001_0299, "AMD_RAPL_POWER_UNIT", "AMD RAPL power, energy and time units"),
    msr(0xc001_029a, "AMD_CORE_ENERGY_STATUS", "AMD core energy consumed"),
    msr(0xc001_029b, "AMD_PKG_ENERGY_STATUS", "AMD package energy consumed"),
    msr(0xc001_02b0, "AMD_CPPC_CAP1", "CPPC capabilities"),
    msr(0xc001_02b1, "AMD_CPPC_ENABLE", "CPPC enable"),
    msr(0xc001_02b2, "AMD_CPPC_CAP2", "CPPC capabilities 2"),
    msr(0xc001_02b3, "AMD_CPPC_REQ", "CPPC performance request"),
    msr(0xc001_02b4, "AMD_CPPC_STATUS", "CPPC status"),
    msr(0xc001_02f0, "AMD_PPIN_CTL", "Protected processor inventory number control"),
    msr(0xc001_02f1, "AMD_PPIN", "Protected processor inventory number"),
    msr(0xc001_1004, "AMD64_CPUID_FN_1", "CPUID Fn0000_0001 override"),
    msr(0xc001_1020, "AMD64_LS_CFG", "Load-store configuration"),
    msr(0xc001_1022, "AMD64_DC_CFG", "Data cache configuration"),
    msr(0xc001_1029, "AMD64_DE_CFG", "Decode configuration (LFENCE serializing)"),
    msr(0xc001_102a, "AMD64_BU_CFG2", "Bus unit configuration 2"),
    msr(0xc001_1030, "AMD64_IBSFETCHCTL", "IBS fetch control"),
    msr(0xc001_1033, "AMD64_IBSOPCTL", "IBS execution control"),
    msr(0xc001_103a, "AMD64_IBSCTL", "IBS control"),
];

/// Extra accepted spellings: (alias, canonical name).
///
/// Names that differ from a canonical one only by a leading `MSR_` and/or
/// `IA32_` need no entry here: [`index_of`] strips those prefixes itself.
pub static ALIASES: &[(&str, &str)] = &[
    ("IA32_TIME_STAMP_COUNTER", "IA32_TSC"),
    ("IA32_APIC_BASE", "IA32_APICBASE"),
    ("IA32_FEATURE_CONTROL", "IA32_FEAT_CTL"),
    ("IA32_BIOS_UPDT_TRIG", "IA32_UCODE_WRITE"),
    ("IA32_BIOS_SIGN_ID", "IA32_UCODE_REV"),
    ("AMD64_PATCH_LEVEL", "IA32_UCODE_REV"),
    ("IA32_CORE_CAPABILITIES", "IA32_CORE_CAPS"),
    ("IA32_MTRRCAP", "MTRRCAP"),
    ("IA32_PERFEVTSEL0", "P6_EVNTSEL0"),
    ("IA32_PERFEVTSEL1", "P6_EVNTSEL1"),
    ("IA32_DEBUGCTL", "IA32_DEBUGCTLMSR"),
    ("IA32_MTRR_FIX64K_00000", "MTRRFIX64K_00000"),
    ("IA32_PAT", "IA32_CR_PAT"),
    ("IA32_MTRR_DEF_TYPE", "MTRRDEFTYPE"),
    ("IA32_FIXED_CTR0", "CORE_PERF_FIXED_CTR0"),
    ("IA32_FIXED_CTR1", "CORE_PERF_FIXED_CTR1"),
    ("IA32_FIXED_CTR2", "CORE_PERF_FIXED_CTR2"),
    ("IA32_FIXED_CTR_CTRL", "CORE_PERF_FIXED_CTR_CTRL"),
    ("IA32_PERF_GLOBAL_STATUS", "CORE_PERF_GLOBAL_STATUS"),
    ("IA32_PERF_GLOBAL_CTRL", "CORE_PERF_GLOBAL_CTRL"),
    ("IA32_PERF_GLOBAL_OVF_CTRL", "CORE_PERF_GLOBAL_OVF_CTRL"),
    ("IA32_TSCDEADLINE", "IA32_TSC_DEADLINE"),
    ("IA32_FMASK", "SYSCALL_MASK"),
    ("SFMASK", "SYSCALL_MASK"),
    ("SYSCFG", "AMD64_SYSCFG"),
    ("HWCR", "K7_HWCR"),
    ("TOP_MEM", "K8_TOP_MEM1"),
    ("TOP_MEM2", "K8_TOP_MEM2"),
    ("VIRT_SPEC_CTRL", "AMD64_VIRT_SPEC_CTRL"),
    ("DE_CFG", "AMD64_DE_CFG"),
];

/// Whole named groups of MSRs: (name, first index, last index inclusive,
/// summary).
///
/// `HYPERV` ends at `0x400001ff`, not `0x400000ff`, so that it also covers
/// the crash, reenlightenment and TSC-emulation MSRs (`0x40000100`..=
/// `0x40000118`); the nested SynIC block at `0x40001080` is outside it.
#[rustfmt::skip]
pub static MSR_GROUPS: &[(&str, u32, u32, &str)] = &[
    ("SGX_LEPUBKEYHASH", 0x0000_008c, 0x0000_008f, "SGX launch enclave public key hash"),
    ("MC_CTL2", 0x0000_0280, 0x0000_029f, "Per-bank CMCI control (IA32_MCi_CTL2), 32 banks"),
    ("MCA_BANKS", 0x0000_0400, 0x0000_047f, "Machine-check bank CTL/STATUS/ADDR/MISC, 32 banks"),
    ("VMX", 0x0000_0480, 0x0000_0492, "VMX capability reporting MSRs"),
    ("RTIT", 0x0000_0560, 0x0000_0587, "Intel Processor Trace MSRs"),
    ("CET", 0x0000_06a0, 0x0000_06a8, "Control-flow enforcement (CET) MSRs"),
    ("X2APIC", crate::abi::X2APIC_FIRST, crate::abi::X2APIC_LAST, "x2APIC register space"),
    ("LBR_INFO", 0x0000_0dc0, 0x0000_0ddf, "Last branch record info 0-31"),
    ("HYPERV", 0x4000_0000, 0x4000_01ff, "Hyper-V synthetic MSRs"),
    ("KVM", 0x4b56_4d00, 0x4b56_4dff, "KVM paravirtual MSRs"),
    ("SYSCALL", 0xc000_0081, 0xc000_0084, "SYSCALL/SYSRET targets and flag mask"),
    ("K7_PERF", 0xc001_0000, 0xc001_0007, "AMD legacy performance event selects and counters"),
    ("F15H_PERF", 0xc001_0200, 0xc001_020b, "AMD core performance event select/counter pairs"),
    ("AMD_RAPL", 0xc001_0299, 0xc001_029b, "AMD RAPL unit and energy counters"),
    ("AMD_CPPC", 0xc001_02b0, 0xc001_02b4, "AMD collaborative processor performance control"),
    ("AMD_IBS", 0xc001_1030, 0xc001_103d, "AMD instruction-based sampling"),
];

/// Table entry for `index`, if it is in the table (binary search).
#[must_use]
pub fn entry_of(index: u32) -> Option<&'static MsrName> {
    MSR_NAMES
        .binary_search_by_key(&index, |m| m.index)
        .ok()
        .map(|i| &MSR_NAMES[i])
}

/// `0x48 (IA32_SPEC_CTRL)`, or `0x12345678` for an MSR without a name: how messages show an MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(pub u32);

impl core::fmt::Display for Label {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match name_of(self.0) {
            Some(name) => write!(f, "{:#x} ({name})", self.0),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// Name of `index` if it is in the table (binary search).
#[must_use]
pub fn name_of(index: u32) -> Option<&'static str> {
    entry_of(index).map(|m| m.name)
}

/// `s` without a leading `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let n = prefix.len();
    if s.len() >= n && s.as_bytes()[..n].eq_ignore_ascii_case(prefix.as_bytes()) {
        s.get(n..)
    } else {
        None
    }
}

/// The part of a name that prefix-stripped lookups compare: without a
/// leading `MSR_`, then without a leading `IA32_`.
fn stem(name: &str) -> &str {
    let name = strip_prefix_ci(name, "MSR_").unwrap_or(name);
    strip_prefix_ci(name, "IA32_").unwrap_or(name)
}

/// Index of the entry of `names` whose canonical name is `name` (ASCII
/// case-insensitive).
fn canonical_index(names: &[MsrName], name: &str) -> Option<u32> {
    names
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
        .map(|m| m.index)
}

/// [`index_of`] over the given tables.
fn lookup(names: &[MsrName], aliases: &[(&str, &str)], name: &str) -> Option<u32> {
    if let Some(index) = canonical_index(names, name) {
        return Some(index);
    }
    if let Some(&(_, canonical)) = aliases.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)) {
        return canonical_index(names, canonical);
    }
    let key = stem(name);
    if key.is_empty() {
        return None;
    }
    let canonical = names.iter().map(|m| (m.name, Some(m.index)));
    let by_alias = aliases.iter().map(|&(a, c)| (a, canonical_index(names, c)));
    let mut found: Option<u32> = None;
    for (candidate, index) in canonical.chain(by_alias) {
        let Some(index) = index else { continue };
        if !stem(candidate).eq_ignore_ascii_case(key) {
            continue;
        }
        match found {
            None => found = Some(index),
            Some(f) if f == index => {}
            Some(_) => return None,
        }
    }
    found
}

/// Index of a name, case-insensitive ASCII, accepting canonical names and
/// aliases; e.g. `"IA32_SPEC_CTRL"`, `"ia32_spec_ctrl"`, `"SPEC_CTRL"`,
/// `"MSR_IA32_SPEC_CTRL"`.
///
/// Lookup order: exact canonical name, then exact alias, then a
/// prefix-stripped match: a leading `MSR_` and then a leading `IA32_` are
/// removed from both `name` and each canonical name/alias, and the remainders
/// are compared. The stripped match succeeds only if every name it matches
/// denotes the same index; an ambiguous name gives `None`.
#[must_use]
pub fn index_of(name: &str) -> Option<u32> {
    lookup(MSR_NAMES, ALIASES, name)
}

/// Inclusive index range of the group called `name` (ASCII
/// case-insensitive), e.g. `"X2APIC"` or `"kvm"`.
#[must_use]
pub fn group_of(name: &str) -> Option<(u32, u32)> {
    MSR_GROUPS
        .iter()
        .find(|g| g.0.eq_ignore_ascii_case(name))
        .map(|g| (g.1, g.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `prefix ++ s`, optionally lower-cased, in `buf`.
    fn build<'a>(buf: &'a mut [u8; 96], prefix: &str, s: &str, lower: bool) -> &'a str {
        let p = prefix.len();
        let n = p + s.len();
        buf[..p].copy_from_slice(prefix.as_bytes());
        buf[p..n].copy_from_slice(s.as_bytes());
        if lower {
            buf[..n].make_ascii_lowercase();
        }
        core::str::from_utf8(&buf[..n]).unwrap()
    }

    fn is_upper_ident(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }

    #[test]
    fn enough_entries() {
        assert!(MSR_NAMES.len() >= 60, "only {} entries", MSR_NAMES.len());
    }

    #[test]
    fn sorted_strictly_by_index() {
        for w in MSR_NAMES.windows(2) {
            assert!(
                w[0].index < w[1].index,
                "{} ({:#x}) not before {} ({:#x})",
                w[0].name,
                w[0].index,
                w[1].name,
                w[1].index
            );
        }
    }

    #[test]
    fn names_unique_uppercase_and_summarised() {
        for (i, m) in MSR_NAMES.iter().enumerate() {
            assert!(is_upper_ident(m.name), "bad name {:?}", m.name);
            assert!(!m.name.starts_with("MSR_"), "{} keeps MSR_", m.name);
            assert!(!m.summary.is_empty(), "{} has no summary", m.name);
            for other in &MSR_NAMES[i + 1..] {
                assert_ne!(m.name, other.name);
            }
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 96];
        for m in MSR_NAMES {
            assert_eq!(index_of(m.name), Some(m.index), "{}", m.name);
            assert_eq!(name_of(m.index), Some(m.name));
            assert_eq!(name_of(index_of(m.name).unwrap()), Some(m.name));
            assert_eq!(entry_of(m.index), Some(m));
            let lower = build(&mut buf, "", m.name, true);
            assert_eq!(index_of(lower), Some(m.index), "{lower}");
            let linux = build(&mut buf, "MSR_", m.name, false);
            assert_eq!(index_of(linux), Some(m.index), "{linux}");
            let linux = build(&mut buf, "msr_", m.name, true);
            assert_eq!(index_of(linux), Some(m.index), "{linux}");
        }
    }

    #[test]
    fn prefix_stripped_lookups_work() {
        let mut buf = [0u8; 96];
        for m in MSR_NAMES {
            let key = stem(m.name);
            assert_eq!(index_of(key), Some(m.index), "{key} for {}", m.name);
            let lower = build(&mut buf, "", key, true);
            assert_eq!(index_of(lower), Some(m.index), "{lower}");
            let sdm = build(&mut buf, "IA32_", key, false);
            assert_eq!(index_of(sdm), Some(m.index), "{sdm}");
        }
        assert_eq!(index_of("SPEC_CTRL"), Some(0x48));
        assert_eq!(index_of("spec_ctrl"), Some(0x48));
        assert_eq!(index_of("MSR_IA32_SPEC_CTRL"), Some(0x48));
        assert_eq!(index_of("IA32_EFER"), Some(0xc000_0080));
        assert_eq!(index_of("MSR_LSTAR"), Some(0xc000_0082));
        assert_eq!(index_of("TSC"), Some(0x10));
        assert_eq!(index_of("X2APIC_TPR"), Some(0x808));
        assert_eq!(index_of("MSR_KVM_SYSTEM_TIME_NEW"), Some(0x4b56_4d01));
        assert_eq!(index_of("IA32_KERNEL_GS_BASE"), Some(0xc000_0102));
        assert_eq!(index_of("IA32_HWP_REQUEST"), Some(0x774));
    }

    #[test]
    fn prefix_stripped_keys_are_unambiguous() {
        // No two names (canonical or alias) of different MSRs share a stem.
        let all = || {
            MSR_NAMES.iter().map(|m| (m.name, m.index)).chain(
                ALIASES
                    .iter()
                    .map(|&(a, c)| (a, canonical_index(MSR_NAMES, c).unwrap())),
            )
        };
        for (a, ai) in all() {
            for (b, bi) in all() {
                if ai != bi {
                    assert!(
                        !stem(a).eq_ignore_ascii_case(stem(b)),
                        "{a} ({ai:#x}) and {b} ({bi:#x}) share a stem"
                    );
                }
            }
        }
    }

    #[test]
    fn ambiguous_stem_is_rejected() {
        let names = [
            msr(1, "IA32_FOO", "one"),
            msr(2, "FOO", "two"),
            msr(3, "IA32_BAR", "three"),
        ];
        let aliases = [("MSR_BAZ", "IA32_BAR"), ("IA32_QUX", "IA32_BAR")];
        let find = |name| lookup(&names, &aliases, name);
        // Exact names win over stripped matches.
        assert_eq!(find("FOO"), Some(2));
        assert_eq!(find("ia32_foo"), Some(1));
        // "MSR_FOO" strips to "FOO", the stem of both 1 and 2: ambiguous.
        assert_eq!(find("MSR_FOO"), None);
        assert_eq!(find("MSR_IA32_FOO"), None);
        // Several names of the same MSR are not ambiguous.
        assert_eq!(find("BAR"), Some(3));
        assert_eq!(find("BAZ"), Some(3));
        assert_eq!(find("QUX"), Some(3));
        assert_eq!(find("MSR_QUX"), Some(3));
        // A bare prefix matches nothing.
        assert_eq!(find("MSR_"), None);
        assert_eq!(index_of("MSR_"), None);
        assert_eq!(index_of("IA32_"), None);
        assert_eq!(index_of("MSR_IA32_"), None);
    }

    #[test]
    fn aliases_resolve() {
        let mut buf = [0u8; 96];
        for (i, &(alias, canonical)) in ALIASES.iter().enumerate() {
            assert!(is_upper_ident(alias), "bad alias {alias:?}");
            let index = canonical_index(MSR_NAMES, canonical)
                .unwrap_or_else(|| panic!("alias {alias} -> unknown {canonical}"));
            assert!(
                MSR_NAMES.iter().all(|m| m.name != alias),
                "alias {alias} is also a canonical name"
            );
            assert!(
                ALIASES[i + 1..].iter().all(|&(a, _)| a != alias),
                "duplicate alias {alias}"
            );
            assert_eq!(index_of(alias), Some(index), "{alias}");
            let lower = build(&mut buf, "", alias, true);
            assert_eq!(index_of(lower), Some(index), "{lower}");
            assert_eq!(name_of(index), Some(canonical));
        }
        assert_eq!(index_of("SFMASK"), Some(0xc000_0084));
        assert_eq!(index_of("IA32_FEATURE_CONTROL"), Some(0x3a));
        assert_eq!(index_of("FEATURE_CONTROL"), Some(0x3a));
        assert_eq!(index_of("IA32_BIOS_SIGN_ID"), Some(0x8b));
        assert_eq!(index_of("BIOS_SIGN_ID"), Some(0x8b));
        assert_eq!(index_of("UCODE_REV"), Some(0x8b));
        assert_eq!(index_of("MSR_AMD64_PATCH_LEVEL"), Some(0x8b));
        assert_eq!(index_of("IA32_PAT"), Some(0x277));
        assert_eq!(index_of("PAT"), Some(0x277));
        assert_eq!(index_of("MSR_MTRRcap"), Some(0xfe));
        assert_eq!(index_of("IA32_APIC_BASE"), Some(0x1b));
        assert_eq!(index_of("APIC_BASE"), Some(0x1b));
        assert_eq!(index_of("MSR_IA32_APICBASE"), Some(0x1b));
    }

    #[test]
    fn brief_indices() {
        let expect: &[(&str, u32)] = &[
            ("IA32_TSC", 0x10),
            ("IA32_APICBASE", 0x1b),
            ("IA32_FEAT_CTL", 0x3a),
            ("IA32_TSC_ADJUST", 0x3b),
            ("IA32_SPEC_CTRL", 0x48),
            ("IA32_PRED_CMD", 0x49),
            ("IA32_UCODE_REV", 0x8b),
            ("MTRRCAP", 0xfe),
            ("IA32_SYSENTER_CS", 0x174),
            ("IA32_SYSENTER_ESP", 0x175),
            ("IA32_SYSENTER_EIP", 0x176),
            ("IA32_MCG_CAP", 0x179),
            ("IA32_MCG_STATUS", 0x17a),
            ("IA32_MCG_CTL", 0x17b),
            ("IA32_MISC_ENABLE", 0x1a0),
            ("IA32_CR_PAT", 0x277),
            ("IA32_ARCH_CAPABILITIES", 0x10a),
            ("IA32_FLUSH_CMD", 0x10b),
            ("IA32_TSX_CTRL", 0x122),
            ("CORE_THREAD_COUNT", 0x35),
            ("PLATFORM_INFO", 0xce),
            ("IA32_MPERF", 0xe7),
            ("IA32_APERF", 0xe8),
            ("IA32_XSS", 0xda0),
            ("IA32_TSC_DEADLINE", 0x6e0),
            ("IA32_PKRS", 0x6e1),
            ("RAPL_POWER_UNIT", 0x606),
            ("PKG_POWER_LIMIT", 0x610),
            ("PKG_ENERGY_STATUS", 0x611),
            ("DRAM_ENERGY_STATUS", 0x619),
            ("PP0_ENERGY_STATUS", 0x639),
            ("PP1_ENERGY_STATUS", 0x641),
            ("PLATFORM_ENERGY_STATUS", 0x64d),
            ("AMD_RAPL_POWER_UNIT", 0xc001_0299),
            ("AMD_CORE_ENERGY_STATUS", 0xc001_029a),
            ("AMD_PKG_ENERGY_STATUS", 0xc001_029b),
            ("EFER", 0xc000_0080),
            ("STAR", 0xc000_0081),
            ("LSTAR", 0xc000_0082),
            ("CSTAR", 0xc000_0083),
            ("SYSCALL_MASK", 0xc000_0084),
            ("FS_BASE", 0xc000_0100),
            ("GS_BASE", 0xc000_0101),
            ("KERNEL_GS_BASE", 0xc000_0102),
            ("TSC_AUX", 0xc000_0103),
            ("VM_CR", 0xc001_0114),
            ("VM_HSAVE_PA", 0xc001_0117),
            ("AMD64_DE_CFG", 0xc001_1029),
            ("KVM_WALL_CLOCK", 0x11),
            ("KVM_SYSTEM_TIME", 0x12),
            ("KVM_WALL_CLOCK_NEW", 0x4b56_4d00),
            ("KVM_SYSTEM_TIME_NEW", 0x4b56_4d01),
            ("KVM_ASYNC_PF_EN", 0x4b56_4d02),
            ("KVM_STEAL_TIME", 0x4b56_4d03),
            ("KVM_PV_EOI_EN", 0x4b56_4d04),
            ("KVM_POLL_CONTROL", 0x4b56_4d05),
            ("KVM_ASYNC_PF_INT", 0x4b56_4d06),
            ("KVM_ASYNC_PF_ACK", 0x4b56_4d07),
            ("KVM_MIGRATION_CONTROL", 0x4b56_4d08),
            ("HV_X64_MSR_GUEST_OS_ID", 0x4000_0000),
            ("HV_X64_MSR_HYPERCALL", 0x4000_0001),
            ("HV_X64_MSR_VP_INDEX", 0x4000_0002),
            ("HV_X64_MSR_TIME_REF_COUNT", 0x4000_0020),
            ("IA32_X2APIC_APICID", 0x802),
            ("IA32_X2APIC_TPR", 0x808),
            ("IA32_X2APIC_EOI", 0x80b),
            ("IA32_X2APIC_ICR", 0x830),
        ];
        for &(name, index) in expect {
            assert_eq!(index_of(name), Some(index), "{name}");
            assert_eq!(name_of(index), Some(name), "{index:#x}");
        }
    }

    #[test]
    fn unknown_names_and_indices() {
        for name in [
            "",
            "_",
            "NOT_AN_MSR",
            "IA32_NOT_AN_MSR",
            "MSR_NOT_AN_MSR",
            "IA32_TSCX",
            "IA32_TS",
            "SPEC_CTRL ",
            " SPEC_CTRL",
            "SPEC-CTRL",
            "X2APIC",
            "KVM",
            "spéc_ctrl",
            "IA32_SPEC_CTRLÉ",
        ] {
            assert_eq!(index_of(name), None, "{name:?}");
        }
        for index in [0, 0x13, 0x801, 0x4000_0004, 0x4b56_4dff, 0xffff_ffff] {
            assert_eq!(name_of(index), None, "{index:#x}");
            assert_eq!(entry_of(index), None, "{index:#x}");
        }
    }

    #[test]
    fn groups_resolve() {
        for (i, &(name, first, last, summary)) in MSR_GROUPS.iter().enumerate() {
            assert!(is_upper_ident(name), "bad group name {name:?}");
            assert!(first <= last, "{name}");
            assert!(!summary.is_empty(), "{name}");
            assert_eq!(group_of(name), Some((first, last)));
            assert_eq!(index_of(name), None, "group {name} is also an MSR name");
            for &(other, ..) in &MSR_GROUPS[i + 1..] {
                assert_ne!(name, other);
            }
        }
        assert_eq!(group_of("X2APIC"), Some((0x800, 0x8ff)));
        assert_eq!(group_of("x2apic"), Some((0x800, 0x8ff)));
        assert_eq!(group_of("KVM"), Some((0x4b56_4d00, 0x4b56_4dff)));
        assert_eq!(group_of("HyperV"), Some((0x4000_0000, 0x4000_01ff)));
        assert_eq!(group_of("NOPE"), None);
        assert_eq!(group_of(""), None);
    }

    #[test]
    fn families_fall_in_their_groups() {
        let in_group = |group: &str, index: u32| {
            let (lo, hi) = group_of(group).unwrap();
            (lo..=hi).contains(&index)
        };
        for m in MSR_NAMES {
            if m.name.starts_with("IA32_X2APIC_") {
                assert!(in_group("X2APIC", m.index), "{}", m.name);
            }
            if m.name.starts_with("HV_X64_MSR_") {
                assert!(in_group("HYPERV", m.index), "{}", m.name);
            }
            if m.name.starts_with("KVM_") && m.index > 0xff {
                assert!(in_group("KVM", m.index), "{}", m.name);
            }
            if m.name.starts_with("IA32_VMX_") {
                assert!(in_group("VMX", m.index), "{}", m.name);
            }
            if m.name.starts_with("AMD_RAPL") || m.name.ends_with("ENERGY_STATUS") {
                let amd = m.name.starts_with("AMD_");
                assert_eq!(in_group("AMD_RAPL", m.index), amd, "{}", m.name);
            }
        }
    }
}
