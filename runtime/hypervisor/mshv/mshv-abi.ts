/**
 * Microsoft Hypervisor's root-partition ABI as Linux exposes it through /dev/mshv (x86-64):
 * ioctl numbers and argument layouts from include/uapi/linux/mshv.h (Linux 6.15+), message
 * and register layouts from include/hyperv/hvgdk_mini.h and hvhdk.h, and the x64 intercept
 * payloads the kernel tree does not carry from Microsoft's uapi hvhdk.h (MIT). Every size and
 * offset here is checked against those headers by test/mshv-layout.test.ts, which compiles
 * a C program against copies of them (test/fixtures/mshv-headers/).
 * Nothing outside `runtime/hypervisor/mshv/` imports this file.
 */

export const MSHV_IOCTL = 0xb8;

// _IOC(dir, type, nr, size) from include/uapi/asm-generic/ioctl.h.
const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;
function ioc(direction: number, nr: number, size: number): number {
  return ((direction << 30) | (size << 16) | (MSHV_IOCTL << 8) | nr) >>> 0;
}

/** struct sizes of the ioctl arguments (bytes). */
export const Size = {
  mshv_create_partition: 16,
  mshv_create_vp: 4,
  mshv_user_mem_region: 32,
  mshv_user_irqfd: 16,
  mshv_user_ioeventfd: 32,
  mshv_root_hvcall: 32,
  mshv_run_vp: 256,
  mshv_get_set_vp_state: 16,
  hv_message: 256,
  hv_message_header: 16,
  hv_x64_segment_register: 16,
  hv_x64_table_register: 16,
  hv_register_value: 16,
  hv_register_assoc: 32,
  hv_input_get_vp_registers: 16,
  hv_input_set_vp_registers: 16,
  hv_vp_register_page: 688,
  hv_x64_intercept_message_header: 40,
  hv_x64_io_port_intercept_message: 128,
  hv_x64_memory_intercept_message: 80,
  hv_x64_msr_intercept_message: 64,
  hv_x64_cpuid_intercept_message: 104,
  hv_x64_exception_intercept_message: 240,
  hv_x64_unrecoverable_exception_message: 40,
  hv_x64_halt_message: 40,
  hv_input_install_intercept: 24,
} as const;

export const Ioctl = {
  /** /dev/mshv */
  CREATE_PARTITION: ioc(IOC_WRITE, 0x00, Size.mshv_create_partition),
  /** partition fd */
  INITIALIZE_PARTITION: ioc(IOC_NONE, 0x00, 0),
  CREATE_VP: ioc(IOC_WRITE, 0x01, Size.mshv_create_vp),
  SET_GUEST_MEMORY: ioc(IOC_WRITE, 0x02, Size.mshv_user_mem_region),
  IRQFD: ioc(IOC_WRITE, 0x03, Size.mshv_user_irqfd),
  IOEVENTFD: ioc(IOC_WRITE, 0x04, Size.mshv_user_ioeventfd),
  /** partition fd or VP fd */
  ROOT_HVCALL: ioc(IOC_READ | IOC_WRITE, 0x07, Size.mshv_root_hvcall),
  /** VP fd */
  RUN_VP: ioc(IOC_READ, 0x00, Size.mshv_run_vp),
  GET_VP_STATE: ioc(IOC_READ | IOC_WRITE, 0x01, Size.mshv_get_set_vp_state),
  SET_VP_STATE: ioc(IOC_READ | IOC_WRITE, 0x02, Size.mshv_get_set_vp_state),
} as const;

/** MSHV_PT_BIT_*: struct mshv_create_partition.pt_flags bits. */
export const PartitionFlag = { LAPIC: 1n << 0n, X2APIC: 1n << 1n, GPA_SUPER_PAGES: 1n << 2n } as const;
/** MSHV_SET_MEM_BIT_*: struct mshv_user_mem_region.flags bits. */
export const MemoryFlag = { WRITABLE: 1 << 0, EXECUTABLE: 1 << 1, UNMAP: 1 << 2 } as const;
/** MSHV_IOEVENTFD_BIT_* */
export const IoEventFlag = { DATAMATCH: 1 << 0, PIO: 1 << 1, DEASSIGN: 1 << 2 } as const;
/** MSHV_VP_MMAP_OFFSET_REGISTERS: the VP register page, mmap offset in pages. */
export const VP_MMAP_OFFSET_REGISTERS = 0;
export const HV_PAGE_SIZE = 0x1000;

export const Offset = {
  mshv_create_partition: { pt_flags: 0, pt_isolation: 8 },
  mshv_create_vp: { vp_index: 0 },
  mshv_user_mem_region: { size: 0, guest_pfn: 8, userspace_addr: 16, flags: 24 },
  mshv_user_irqfd: { fd: 0, resamplefd: 4, gsi: 8, flags: 12 },
  mshv_user_ioeventfd: { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24 },
  mshv_root_hvcall: { code: 0, reps: 2, in_sz: 4, out_sz: 6, status: 8, in_ptr: 16, out_ptr: 24 },
  hv_message_header: { message_type: 0, payload_size: 4, message_flags: 5, sender: 8 },
  /** Payloads start right after the header. */
  hv_message: { header: 0, payload: 16 },
  hv_x64_segment_register: { base: 0, limit: 8, selector: 12, attributes: 14 },
  hv_x64_table_register: { limit: 6, base: 8 },
  hv_register_assoc: { name: 0, value: 16 },
  hv_input_get_vp_registers: { partition_id: 0, vp_index: 8, input_vtl: 12, names: 16 },
  hv_input_set_vp_registers: { partition_id: 0, vp_index: 8, input_vtl: 12, elements: 16 },
  hv_vp_register_page: {
    version: 0, isvalid: 2, dirty: 4,
    rax: 8, rcx: 16, rdx: 24, rbx: 32, rsp: 40, rbp: 48, rsi: 56, rdi: 64,
    r8: 72, r9: 80, r10: 88, r11: 96, r12: 104, r13: 112, r14: 120, r15: 128,
    rip: 136, rflags: 144, cr0: 344, cr3: 352, cr4: 360, efer: 376,
  },
  /** Offsets within the payload (hv_message.u). */
  hv_x64_intercept_message_header: {
    vp_index: 0, instruction_length: 4, intercept_access_type: 5, execution_state: 6, cs_segment: 8, rip: 24, rflags: 32,
  },
  hv_x64_io_port_intercept_message: {
    port_number: 40, access_info: 42, instruction_byte_count: 43, rax: 48, instruction_bytes: 56,
    ds_segment: 72, es_segment: 88, rcx: 104, rsi: 112, rdi: 120,
  },
  hv_x64_memory_intercept_message: {
    cache_type: 40, instruction_byte_count: 44, memory_access_info: 45, guest_virtual_address: 48,
    guest_physical_address: 56, instruction_bytes: 64,
  },
  hv_x64_msr_intercept_message: { msr_number: 40, rdx: 48, rax: 56 },
  hv_x64_cpuid_intercept_message: {
    rax: 40, rcx: 48, rdx: 56, rbx: 64,
    default_result_rax: 72, default_result_rcx: 80, default_result_rdx: 88, default_result_rbx: 96,
  },
  hv_x64_exception_intercept_message: {
    exception_vector: 40, exception_info: 42, instruction_byte_count: 43, error_code: 44, exception_parameter: 48,
    instruction_bytes: 64,
  },
  /** HVCALL_INSTALL_INTERCEPT input. */
  hv_input_install_intercept: { partition_id: 0, access_type: 8, intercept_type: 12, intercept_parameter: 16 },
} as const;

/** enum hv_message_type (the ones the backend handles). */
export const MessageType = {
  NONE: 0x0000_0000,
  UNMAPPED_GPA: 0x8000_0000,
  GPA_INTERCEPT: 0x8000_0001,
  TIMER_EXPIRED: 0x8000_0010,
  INVALID_VP_REGISTER_VALUE: 0x8000_0020,
  UNRECOVERABLE_EXCEPTION: 0x8000_0021,
  UNSUPPORTED_FEATURE: 0x8000_0022,
  X64_IO_PORT_INTERCEPT: 0x8001_0000,
  X64_MSR_INTERCEPT: 0x8001_0001,
  X64_CPUID_INTERCEPT: 0x8001_0002,
  X64_EXCEPTION_INTERCEPT: 0x8001_0003,
  X64_APIC_EOI: 0x8001_0004,
  X64_HALT: 0x8001_0007,
} as const;

/** enum hv_intercept_access_type (intercept header intercept_access_type). */
export const InterceptAccess = { READ: 0, WRITE: 1, EXECUTE: 2 } as const;

/** hv_x64_io_port_access_info bits. */
export const IoAccessInfo = { SIZE_MASK: 0x7, STRING_OP: 1 << 3, REP_PREFIX: 1 << 4 } as const;

/** hv_x64_segment_register attribute bits. */
export const SegmentAttribute = { LONG: 1 << 13, DEFAULT_BIG: 1 << 14 } as const;

/** HV_X64_REGISTER_CLASS_*: bit numbers of hv_vp_register_page.dirty. */
export const RegisterClass = { GENERAL: 0, IP: 1, XMM: 2, SEGMENT: 3, FLAGS: 4 } as const;

/** HVCALL_* codes for MSHV_ROOT_HVCALL. */
export const HvCall = {
  INSTALL_INTERCEPT: 0x004d,
  GET_VP_REGISTERS: 0x0050,
  SET_VP_REGISTERS: 0x0051,
} as const;

/** HV_STATUS_SUCCESS */
export const HV_STATUS_SUCCESS = 0;

/**
 * enum hv_register_name, x64 general registers: the order of struct kvm_regs-like
 * Registers (rax, rbx, rcx, ...) mapped to the hypervisor's names (TLFS numbering: RAX is
 * 0x00020000 and the rest follow in the x86 encoding order, RIP 0x00020010, RFLAGS 0x00020011).
 */
export const RegisterName = {
  rax: 0x0002_0000, rcx: 0x0002_0001, rdx: 0x0002_0002, rbx: 0x0002_0003,
  rsp: 0x0002_0004, rbp: 0x0002_0005, rsi: 0x0002_0006, rdi: 0x0002_0007,
  r8: 0x0002_0008, r9: 0x0002_0009, r10: 0x0002_000a, r11: 0x0002_000b,
  r12: 0x0002_000c, r13: 0x0002_000d, r14: 0x0002_000e, r15: 0x0002_000f,
  rip: 0x0002_0010, rflags: 0x0002_0011,
} as const;

/** enum hv_register_name: MSRs the hypervisor keeps as VP registers. */
export const MsrRegisterName = {
  tsc: 0x0008_0000, efer: 0x0008_0001, kernel_gs_base: 0x0008_0002, apic_base: 0x0008_0003, pat: 0x0008_0004,
  sysenter_cs: 0x0008_0005, sysenter_eip: 0x0008_0006, sysenter_esp: 0x0008_0007,
  star: 0x0008_0008, lstar: 0x0008_0009, cstar: 0x0008_000a, sfmask: 0x0008_000b,
} as const;

/** enum hv_register_name: control, segment, table and MSR-backed registers (x64). */
export const SpecialRegisterName = {
  cr0: 0x0004_0000, cr2: 0x0004_0001, cr3: 0x0004_0002, cr4: 0x0004_0003, cr8: 0x0004_0004,
  es: 0x0006_0000, cs: 0x0006_0001, ss: 0x0006_0002, ds: 0x0006_0003, fs: 0x0006_0004, gs: 0x0006_0005,
  ldt: 0x0006_0006, tr: 0x0006_0007,
  idt: 0x0007_0000, gdt: 0x0007_0001,
  efer: MsrRegisterName.efer, apicBase: MsrRegisterName.apic_base,
} as const;

/** MSR index -> the VP register that holds it. */
export const MSR_REGISTER_NAMES: ReadonlyMap<number, number> = new Map([
  [0x10, MsrRegisterName.tsc],
  [0xc000_0080, MsrRegisterName.efer],
  [0xc000_0102, MsrRegisterName.kernel_gs_base],
  [0x1b, MsrRegisterName.apic_base],
  [0x277, MsrRegisterName.pat],
  [0x174, MsrRegisterName.sysenter_cs],
  [0x176, MsrRegisterName.sysenter_eip],
  [0x175, MsrRegisterName.sysenter_esp],
  [0xc000_0081, MsrRegisterName.star],
  [0xc000_0082, MsrRegisterName.lstar],
  [0xc000_0083, MsrRegisterName.cstar],
  [0xc000_0084, MsrRegisterName.sfmask],
]);

/** HV_REGISTER_PENDING_INTERRUPTION and its fields (union hv_x64_pending_interruption_register). */
export const HV_REGISTER_PENDING_INTERRUPTION = 0x0001_0002;
export const PendingInterruption = { PENDING: 1n, TYPE_EXCEPTION: 3n << 1n, DELIVER_ERROR_CODE: 1n << 4n, VECTOR_SHIFT: 16n } as const;


export const INTERCEPT_TYPE_X64_CPUID = 2;
export const INTERCEPT_ACCESS_MASK_EXECUTE = 4;
