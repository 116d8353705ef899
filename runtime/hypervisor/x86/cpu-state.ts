/**
 * The x86 register model: the architecture module beside the seam. Backends translate these
 * to their own layouts (kvm_regs, hv_register_value); boot code and the vCPU worker speak
 * them. Nothing here knows a backend.
 */

export interface Registers {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

export interface Segment {
  base: bigint; limit: number; selector: number; type: number; present: number; dpl: number;
  db: number; s: number; l: number; g: number; avl: number; unusable: number;
}

export interface DescriptorTable {
  base: bigint;
  limit: number;
}

export interface SpecialRegisters {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DescriptorTable; idt: DescriptorTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
}

export interface CpuidEntry {
  function: number; index: number; flags: number; eax: number; ebx: number; ecx: number; edx: number;
}

export interface MsrEntry {
  index: number;
  value: bigint;
}

/** x87 control word and SSE control/status register. */
export interface FpuControl {
  fcw: number;
  mxcsr: number;
}

/** An initial CPU state: the registers to change from the reset state. */
export interface CpuState {
  registers?: Partial<Registers>;
  specialRegisters?: Partial<SpecialRegisters>;
  msrs?: MsrEntry[];
  fpu?: FpuControl;
  /** A vCPU that waits for INIT/SIPI from another vCPU (an SMP application processor). */
  waitForStartup?: boolean;
}

/** What an x86 vCPU handle offers beyond running: its state, read and written in its own thread. */
export interface X86VcpuState {
  getRegisters(): Registers;
  setRegisters(registers: Registers): void;
  getSpecialRegisters(): SpecialRegisters;
  setSpecialRegisters(sregs: SpecialRegisters): void;
  setCpuid(entries: CpuidEntry[]): void;
  setMsrs(msrs: MsrEntry[]): void;
  setFpuControl(fpu: FpuControl): void;
  /** Marks the vCPU as waiting for INIT/SIPI (an SMP application processor). */
  setWaitForStartup(): void;
}

/** Puts a vCPU into `state` (and `cpuid`, unless undefined), changing only what `state` names. */
export function applyCpuState(vcpu: X86VcpuState, state: CpuState, cpuid: CpuidEntry[] | undefined): void {
  if (cpuid !== undefined) vcpu.setCpuid(cpuid);
  if (state.specialRegisters) vcpu.setSpecialRegisters({ ...vcpu.getSpecialRegisters(), ...state.specialRegisters });
  if (state.registers) vcpu.setRegisters({ ...vcpu.getRegisters(), ...state.registers });
  if (state.msrs?.length) vcpu.setMsrs(state.msrs);
  if (state.fpu) vcpu.setFpuControl(state.fpu);
  if (state.waitForStartup) vcpu.setWaitForStartup();
}

/** The registers a fatal-exit report shows, as hex strings (structured-clonable). */
export interface RegisterDump {
  rip: string; rsp: string; rflags: string; cr0: string; cr3: string; cr4: string; efer: string;
  cs: string;
}

export function registerDump(vcpu: X86VcpuState): RegisterDump {
  const hex = (v: bigint) => "0x" + v.toString(16).padStart(16, "0");
  const regs = vcpu.getRegisters();
  const sregs = vcpu.getSpecialRegisters();
  return {
    rip: hex(regs.rip), rsp: hex(regs.rsp), rflags: hex(regs.rflags), cr0: hex(sregs.cr0), cr3: hex(sregs.cr3),
    cr4: hex(sregs.cr4), efer: hex(sregs.efer),
    cs: `selector 0x${sregs.cs.selector.toString(16)} base ${hex(sregs.cs.base)} dpl ${sregs.cs.dpl} l ${sregs.cs.l} db ${sregs.cs.db}`,
  };
}
