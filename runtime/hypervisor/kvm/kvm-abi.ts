/**
 * KVM's ABI for x86-64: ioctl numbers, capability numbers, exit reasons and struct
 * offsets, from include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h.
 */

export const KVM_API_VERSION = 12;

export const Ioctl = {
  GET_API_VERSION: 0xae00,
  CREATE_VM: 0xae01,
  CHECK_EXTENSION: 0xae03,
  GET_VCPU_MMAP_SIZE: 0xae04,
  GET_SUPPORTED_CPUID: 0xc008ae05,
  CREATE_VCPU: 0xae41,
  SET_USER_MEMORY_REGION: 0x4020ae46,
  SET_TSS_ADDR: 0xae47,
  SET_IDENTITY_MAP_ADDR: 0x4008ae48,
  CREATE_IRQCHIP: 0xae60,
  IRQ_LINE: 0x4008ae61,
  IRQFD: 0x4020ae76,
  CREATE_PIT2: 0x4040ae77,
  IOEVENTFD: 0x4040ae79,
  RUN: 0xae80,
  GET_REGS: 0x8090ae81,
  SET_REGS: 0x4090ae82,
  GET_SREGS: 0x8138ae83,
  SET_SREGS: 0x4138ae84,
  GET_MSRS: 0xc008ae88,
  SET_MSRS: 0x4008ae89,
  SET_CPUID2: 0x4008ae90,
  GET_FPU: 0x81a0ae8c,
  SET_FPU: 0x41a0ae8d,
  GET_MP_STATE: 0x8004ae98,
  SET_MP_STATE: 0x4004ae99,
  GET_VCPU_EVENTS: 0x8040ae9f,
  SET_VCPU_EVENTS: 0x4040aea0,
  ENABLE_CAP: 0x4068aea3,
  GET_TSC_KHZ: 0xaea3,
  X86_SET_MSR_FILTER: 0x4188aec6,
  REGISTER_COALESCED_MMIO: 0x4010ae67,
  GET_IRQCHIP: 0xc208ae62,
  SET_IRQCHIP: 0x8208ae63,
  SIGNAL_MSI: 0x4020aea5,
  SET_GSI_ROUTING: 0x4008ae6a,
  INTERRUPT: 0x4004ae86,
} as const;

export const Cap = {
  IRQCHIP: 0,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  IRQFD: 32,
  IRQFD_RESAMPLE: 82,
  PIT2: 33,
  IOEVENTFD: 36,
  MAX_VCPUS: 66,
  IMMEDIATE_EXIT: 136,
  SIGNAL_MSI: 77,
  X86_USER_SPACE_MSR: 188,
  COALESCED_MMIO: 15,
  COALESCED_PIO: 162,
  ENFORCE_PV_FEATURE_CPUID: 190,
  IRQ_ROUTING: 25,
  SPLIT_IRQCHIP: 121,
} as const;

/** Capabilities every VM needs; checked once when the backend opens. */
export const REQUIRED_CAPS: ReadonlyArray<[number, string]> = [
  [Cap.USER_MEMORY, "KVM_CAP_USER_MEMORY"],
  [Cap.SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"],
  [Cap.EXT_CPUID, "KVM_CAP_EXT_CPUID"],
  [Cap.IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"],
];

export const ExitReason = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  NMI: 16,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
  IOAPIC_EOI: 26,
  X86_RDMSR: 29,
  X86_WRMSR: 30,
} as const;

/** struct kvm_run offsets (x86-64). */
export const Run = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  // union at 32
  io_direction: 32,
  io_size: 33,
  io_port: 34,
  io_count: 36,
  io_data_offset: 40,
  mmio_phys_addr: 32,
  mmio_data: 40,
  mmio_len: 48,
  mmio_is_write: 52,
  hw_entry_failure_reason: 32,
  internal_suberror: 32,
  internal_ndata: 36,
  internal_data: 40,
  // struct kvm_run.emulation_failure, the KVM_INTERNAL_ERROR_EMULATION form of internal
  emulation_failure_flags: 40,
  emulation_failure_insn_size: 48,
  emulation_failure_insn_bytes: 49,
  system_event_type: 32,
  eoi_vector: 32,
  msr_error: 32,
  msr_reason: 40,
  msr_index: 44,
  msr_data: 48,
} as const;

export const KVM_EXIT_IO_IN = 0;

/** struct kvm_regs: 18 u64 in this order. */
export const REGISTER_NAMES = [
  "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
] as const;
export const KVM_REGS_SIZE = 144;

/** struct kvm_sregs: 8 segments of 24 bytes, 2 dtables of 16, 7 u64, interrupt bitmap. */
export const SEGMENT_NAMES = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
export const KVM_SEGMENT_SIZE = 24;
export const KVM_SREGS_SIZE = 312;
export const Sregs = {
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apic_base: 272,
} as const;

/** struct kvm_fpu: fpr[8][16], fcw, fsw, ftwx, pad, last_opcode, last_ip, last_dp, xmm[16][16], mxcsr. */
export const KVM_FPU_SIZE = 416;
export const Fpu = { fcw: 128, fsw: 130, mxcsr: 408 } as const;

/** struct kvm_cpuid_entry2 */
export const CPUID_ENTRY_SIZE = 40;
export const MAX_CPUID_ENTRIES = 256;

/** struct kvm_msr_entry: u32 index, u32 reserved, u64 data. */
export const MSR_ENTRY_SIZE = 16;

export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;

/** KVM's local APIC timer counts bus cycles of 1 ns (APIC_BUS_CYCLE_NS_DEFAULT in arch/x86/kvm/lapic.h). */
export const KVM_APIC_BUS_KHZ = 1_000_000;

/** KVM_MSR_EXIT_REASON_* for KVM_CAP_X86_USER_SPACE_MSR. */
export const MSR_EXIT_INVAL = 1 << 0;
export const MSR_EXIT_UNKNOWN = 1 << 1;
export const MSR_EXIT_FILTER = 1 << 2;

/** struct kvm_irqfd's flags: a resample eventfd for a level-triggered line. */
export const IRQFD_FLAG_RESAMPLE = 1 << 1;
/** struct kvm_ioeventfd flags */
export const IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const IOEVENTFD_FLAG_PIO = 1 << 1;

/**
 * The coalesced-write ring (struct kvm_coalesced_mmio_ring) at the page offset that
 * KVM_CAP_COALESCED_MMIO reports, inside every vCPU's mapping (one ring per VM): a header
 * { u32 first; u32 last } then entries { u64 phys_addr; u32 len; u32 pio; u8 data[8] }.
 * KVM appends at `last`; userspace consumes from `first`; one entry always stays free.
 */
export const CoalescedRing = {
  first: 0,
  last: 4,
  entries: 8,
  entryBytes: 24,
  phys_addr: 0,
  len: 8,
  pio: 12,
  data: 16,
  /** (PAGE_SIZE - header) / entry size. */
  max: Math.floor((4096 - 8) / 24),
} as const;
/** struct kvm_coalesced_mmio_zone { u64 addr; u32 size; u32 pio; }. */
export const COALESCED_ZONE_SIZE = 16;

/** KVM_EXIT_INTERNAL_ERROR suberror: the in-kernel emulator could not emulate an instruction. */
export const KVM_INTERNAL_ERROR_EMULATION = 1;
/** emulation_failure.flags: insn_size and insn_bytes are valid. */
export const KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1;

/** struct kvm_vcpu_events (64 bytes): the exception part, offsets from its start. */
export const KVM_VCPU_EVENTS_SIZE = 64;
export const VcpuEvents = {
  exception_injected: 0,
  exception_nr: 1,
  exception_has_error_code: 2,
  exception_pending: 3,
  exception_error_code: 4,
} as const;

export const IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

/** struct kvm_irqchip: chip_id, pad, then a 512-byte union (struct kvm_pic_state for chips 0 and 1). */
export const KVM_IRQCHIP_SIZE = 520;
export const IRQCHIP_PIC_MASTER = 0;
export const IRQCHIP_PIC_SLAVE = 1;
export const IrqChip = { chip_id: 0, chip: 8 } as const;
/** struct kvm_pic_state, inside kvm_irqchip's union. */
export const PicState = { imr: 2, irq_base: 5 } as const;

/** struct kvm_msi: address_lo, address_hi, data, flags, devid, pad[12]. */
export const KVM_MSI_SIZE = 32;

/** KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) args[0]: GSIs 0..23 are the userspace IOAPIC's pins (QEMU reserves 24 too). */
export const SPLIT_IRQCHIP_IOAPIC_PINS = 24;

/**
 * struct kvm_irq_routing { u32 nr; u32 flags; entries[] } with 48-byte entries
 * { u32 gsi; u32 type; u32 flags; u32 pad; union (32 bytes) u }, u.msi = { address_lo, address_hi, data }.
 */
export const IRQ_ROUTING_HEADER_SIZE = 8;
export const IRQ_ROUTING_ENTRY_SIZE = 48;
export const IRQ_ROUTING_IRQCHIP = 1;
export const IRQ_ROUTING_MSI = 2;
/** kvm_irq_routing_irqchip's `irqchip` for the IOAPIC (the PICs are IRQCHIP_PIC_MASTER/SLAVE). */
export const IRQCHIP_IOAPIC = 2;
export const IrqRoutingEntry = { gsi: 0, type: 4, flags: 8, msi_address_lo: 16, msi_address_hi: 20, msi_data: 24, irqchip: 16, pin: 20 } as const;
