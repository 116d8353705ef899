/**
 * The benchmark's guest programs: machine code with the Intel-syntax assembly beside each
 * line. The same bytes run under workervisor, under the C baseline (passed in a file) and,
 * behind a small boot stub, under QEMU.
 *
 * The exit loop reads its settings from a parameter block at RDI (one per vCPU):
 *   +0  u32 marker port    a write there is timestamped on the vCPU thread; a read is the
 *                          start barrier (returns once every vCPU has arrived)
 *   +8  u64 target         port, MMIO address or MSR index of the exit being measured
 *   +16 u32 warm-up batches, +20 u32 calibration rounds, +24 u32 measured batches
 *   +28 u32 finish port    a write tells the host this vCPU is done
 * and then runs:
 *   barrier; W warm-up batches; C calibration rounds; B measured batches; marker; finish
 * where a batch is "marker; K copies of the measured instruction" (unrolled, so there is
 * no loop instruction between exits) and a calibration round is a batch with K = 0.
 * All counts must be at least 1. The loop clobbers RAX, RCX, RDX, RBX (CPUID) and R10-R15.
 */
import { imm32 } from "../runtime/guests/guest-bytes.js";

export type ExitKindName =
  | "pio-write"
  | "pio-read"
  /** pio-write to a device that does WORK_NS of work per write (bench/busy-counter.ts). */
  | "work-write"
  | "mmio-write"
  | "mmio-read"
  | "hlt"
  | "cpuid"
  | "msr-read"
  | "msr-write"
  | "ioeventfd";

export type GuestPrivilege = "cpl0" | "cpl3";

/** The measured instruction of each kind; the exit loop sets EDX and ECX to the target first. */
export const MEASURED_OP: Record<ExitKindName, { bytes: number[]; asm: string }> = {
  "pio-write": { bytes: [0xef], asm: "out dx, eax" },
  "work-write": { bytes: [0xef], asm: "out dx, eax" },
  "pio-read": { bytes: [0xed], asm: "in eax, dx" },
  "mmio-write": { bytes: [0x41, 0x89, 0x03], asm: "mov [r11], eax" },
  "mmio-read": { bytes: [0x41, 0x8b, 0x03], asm: "mov eax, [r11]" },
  hlt: { bytes: [0xf4], asm: "hlt" },
  // Leaf 0 every time: CPUID overwrites EAX, and a drifting leaf would change the cost.
  cpuid: { bytes: [0x31, 0xc0, 0x0f, 0xa2], asm: "xor eax, eax; cpuid" },
  "msr-read": { bytes: [0x0f, 0x32], asm: "rdmsr" },
  "msr-write": { bytes: [0x0f, 0x30], asm: "wrmsr" },
  ioeventfd: { bytes: [0x41, 0x89, 0x03], asm: "mov [r11], eax" },
};

/** Parameter block offsets (bytes). */
export const Param = {
  MARKER_PORT: 0,
  TARGET: 8,
  WARMUP_BATCHES: 16,
  CALIBRATION_ROUNDS: 20,
  MEASURED_BATCHES: 24,
  FINISH_PORT: 28,
} as const;
export const PARAM_BLOCK_BYTES = 64;

export interface ExitLoopParams {
  markerPort: number;
  target: number;
  warmupBatches: number;
  calibrationRounds: number;
  measuredBatches: number;
  finishPort: number;
}

/** The parameter block of one vCPU, as bytes. */
export function parameterBlock(p: ExitLoopParams): Uint8Array {
  for (const [name, value] of Object.entries(p)) {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`exit loop parameter ${name} must be a whole number, got ${value}`);
  }
  for (const name of ["warmupBatches", "calibrationRounds", "measuredBatches"] as const) {
    if (p[name] < 1 || p[name] > 0x7fff_ffff) throw new RangeError(`exit loop ${name} must be from 1 to 2^31-1, got ${p[name]}`);
  }
  const bytes = new Uint8Array(PARAM_BLOCK_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(Param.MARKER_PORT, p.markerPort, true);
  view.setBigUint64(Param.TARGET, BigInt(p.target), true);
  view.setUint32(Param.WARMUP_BATCHES, p.warmupBatches, true);
  view.setUint32(Param.CALIBRATION_ROUNDS, p.calibrationRounds, true);
  view.setUint32(Param.MEASURED_BATCHES, p.measuredBatches, true);
  view.setUint32(Param.FINISH_PORT, p.finishPort, true);
  return bytes;
}

function rel32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
}

/** `marker; K × op; dec counter; jnz` with the counter register's `dec` encoding. */
function batchLoop(op: number[], opsPerBatch: number, decCounter: number[]): number[] {
  const body = [
    0x44, 0x89, 0xd2,                         // mov edx, r10d          ; marker port
    0xef,                                     // out dx, eax            ; marker (timestamped)
    0x44, 0x89, 0xda,                         // mov edx, r11d          ; target port
    0x44, 0x89, 0xd9,                         // mov ecx, r11d          ; target MSR
    ...Array.from({ length: opsPerBatch }, () => op).flat(), // K × the measured instruction
    ...decCounter,                            // dec r1Xd               ; batches left
  ];
  const jump = 6;
  return [
    ...body,
    0x0f, 0x85, ...rel32(-(body.length + jump)), // jnz <start of the batch>
  ];
}

const DEC_R12D = [0x41, 0xff, 0xcc];          // dec r12d
const DEC_R13D = [0x41, 0xff, 0xcd];          // dec r13d
const DEC_R14D = [0x41, 0xff, 0xce];          // dec r14d

/**
 * The exit loop for `kind`, with `opsPerBatch` (K) measured instructions per batch.
 * CPL3 code cannot HLT or touch MSRs (#GP); the loader's `user64` mode opens every port
 * in the TSS I/O bitmap, and its page tables are user-accessible.
 */
export function exitLoopProgram(
  kind: ExitKindName,
  opsPerBatch: number,
  privilege: GuestPrivilege,
  end: "park" | "fall-through" = "park",
): number[] {
  if (!Number.isInteger(opsPerBatch) || opsPerBatch < 1 || opsPerBatch > 4096) {
    throw new RangeError(`ops per batch must be from 1 to 4096, got ${opsPerBatch}`);
  }
  if (privilege === "cpl3" && !kindRunsAtCpl3(kind)) {
    throw new RangeError(`${kind} cannot run at CPL3 (the instruction is privileged)`);
  }
  const op = MEASURED_OP[kind].bytes;
  // An early finisher waits there; a CPL3 vCPU cannot HLT, so it pauses in a loop.
  // "fall-through" leaves it out so that programs can be chained (the QEMU image).
  const park = end === "fall-through" ? [] : privilege === "cpl0"
    ? [
      0xf4,                                   // 1: hlt
      0xeb, 0xfd,                             // jmp 1b
    ]
    : [
      0xf3, 0x90,                             // 1: pause
      0xeb, 0xfc,                             // jmp 1b
    ];
  return [
    0x44, 0x8b, 0x17,                         // mov r10d, [rdi]        ; marker port
    0x4c, 0x8b, 0x5f, 0x08,                   // mov r11, [rdi+8]       ; target
    0x44, 0x8b, 0x67, 0x10,                   // mov r12d, [rdi+16]     ; warm-up batches
    0x44, 0x8b, 0x6f, 0x14,                   // mov r13d, [rdi+20]     ; calibration rounds
    0x44, 0x8b, 0x77, 0x18,                   // mov r14d, [rdi+24]     ; measured batches
    0x44, 0x8b, 0x7f, 0x1c,                   // mov r15d, [rdi+28]     ; finish port
    0x44, 0x89, 0xd2,                         // mov edx, r10d
    0xed,                                     // in eax, dx             ; start barrier
    ...batchLoop(op, opsPerBatch, DEC_R12D),  // warm-up batches
    ...batchLoop([], 0, DEC_R13D),            // calibration rounds: marker only
    ...batchLoop(op, opsPerBatch, DEC_R14D),  // measured batches
    0x44, 0x89, 0xd2,                         // mov edx, r10d
    0xef,                                     // out dx, eax            ; final marker
    0x44, 0x89, 0xfa,                         // mov edx, r15d
    0xef,                                     // out dx, eax            ; finish line
    ...park,
  ];
}

export function kindRunsAtCpl3(kind: ExitKindName): boolean {
  return kind !== "hlt" && kind !== "msr-read" && kind !== "msr-write";
}

/** Markers one vCPU writes for these counts: one per batch and round, and the final one. */
export function markerCount(p: Pick<ExitLoopParams, "warmupBatches" | "calibrationRounds" | "measuredBatches">): number {
  return p.warmupBatches + p.calibrationRounds + p.measuredBatches + 1;
}

// ---- the QEMU peer's boot path: Multiboot (32-bit, paging off) into the same long-mode state ----


export interface LongModeEntry {
  /** Where the stub finds the image to copy to guest-physical 0, and its length (multiple of 4). */
  imageSource: number;
  imageBytes: number;
  /** Guest-physical address of a 6-byte GDT pseudo-descriptor (limit, base). */
  gdtr: number;
  cr0: number;
  cr3: number;
  cr4: number;
  /** EFER bits to set (LME, SCE); the CPU sets LMA itself. */
  efer: number;
  codeSelector: number;
  entry: number;
}

/**
 * 32-bit Multiboot entry (flat protected mode, paging off): copies the flat loader's image
 * (GDT, page tables, TSS, code, parameters) to guest-physical 0, loads the same GDT, CR4,
 * CR3, EFER and CR0 the loader gives KVM directly, and far-jumps into 64-bit code.
 */
export function multibootToLongMode(e: LongModeEntry): number[] {
  return [
    0xfc,                                     // cld
    0xbe, ...imm32(e.imageSource),            // mov esi, imageSource
    0x31, 0xff,                               // xor edi, edi
    0xb9, ...imm32(e.imageBytes / 4),         // mov ecx, imageBytes / 4
    0xf3, 0xa5,                               // rep movsd
    0x0f, 0x01, 0x15, ...imm32(e.gdtr),       // lgdt [gdtr]
    0xb8, ...imm32(e.cr4),                    // mov eax, cr4 value
    0x0f, 0x22, 0xe0,                         // mov cr4, eax
    0xb8, ...imm32(e.cr3),                    // mov eax, cr3 value
    0x0f, 0x22, 0xd8,                         // mov cr3, eax
    0xb9, ...imm32(0xc000_0080),              // mov ecx, IA32_EFER
    0x0f, 0x32,                               // rdmsr
    0x0d, ...imm32(e.efer),                   // or eax, efer bits
    0x0f, 0x30,                               // wrmsr
    0xb8, ...imm32(e.cr0),                    // mov eax, cr0 value  ; PG on: long mode
    0x0f, 0x22, 0xc0,                         // mov cr0, eax
    0xea, ...imm32(e.entry), e.codeSelector & 0xff, e.codeSelector >> 8, // jmp far codeSelector:entry
  ];
}

/** First 64-bit instructions: data segments and stack as the loader sets them. */
export function longModePrologue(dataSelector: number, stack: number): number[] {
  return [
    0xb8, ...imm32(dataSelector),             // mov eax, dataSelector
    0x8e, 0xd8,                               // mov ds, eax
    0x8e, 0xc0,                               // mov es, eax
    0x8e, 0xd0,                               // mov ss, eax
    0x8e, 0xe0,                               // mov fs, eax
    0x8e, 0xe8,                               // mov gs, eax
    0xbc, ...imm32(stack),                    // mov esp, stack
  ];
}

/** Points RDI at a parameter block (before each chained exit loop). */
export function setParameterBlock(address: number): number[] {
  return [
    0xbf, ...imm32(address),                  // mov edi, address
  ];
}

export interface UserModeEntry {
  /** Guest-physical address of the TSS descriptor's access byte in the GDT. */
  tssAccessByte: number;
  tssSelector: number;
  userCode: number;
  userData: number;
  userStack: number;
}

/**
 * Drops to CPL3 and continues with the next instruction: loads TR (the loader's GDT marks
 * the TSS busy, as KVM_SET_SREGS wants it; LTR wants it available) so that CPL3 port I/O
 * consults the TSS I/O bitmap, then IRETQ.
 */
export function enterUserMode(e: UserModeEntry): number[] {
  return [
    0xc6, 0x04, 0x25, ...imm32(e.tssAccessByte), 0x89, // mov byte [tssAccessByte], 0x89 ; available 64-bit TSS
    0xb8, ...imm32(e.tssSelector),            // mov eax, tssSelector
    0x0f, 0x00, 0xd8,                         // ltr ax
    0x6a, e.userData,                         // push userData          ; SS
    0x68, ...imm32(e.userStack),              // push userStack         ; RSP
    0x6a, 0x02,                               // push 2                 ; RFLAGS: IF=0, IOPL=0
    0x6a, e.userCode,                         // push userCode          ; CS
    0x48, 0x8d, 0x05, ...imm32(3),            // lea rax, [rip + 3]     ; the instruction after IRETQ
    0x50,                                     // push rax               ; RIP
    0x48, 0xcf,                               // iretq
  ];
}

/** Ends a QEMU run: status 0 to isa-debug-exit (QEMU exits with 1). */
export function qemuDebugExit(port: number): number[] {
  if (port > 0xff) throw new RangeError("the debug-exit port must be below 0x100 for `out imm8, al`");
  return [
    0x31, 0xc0,                               // xor eax, eax
    0xe6, port,                               // out port, al
    0xf4,                                     // 1: hlt
    0xeb, 0xfd,                               // jmp 1b
  ];
}
