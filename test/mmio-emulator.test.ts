/**
 * The x86 MMIO instruction emulator against KVM as the oracle: a guest runs thousands of
 * generated instructions (every form the emulator covers, random prefixes, REX bits,
 * addressing modes, sizes, registers and flags) whose memory operand lies in an MMIO region.
 * For each, KVM's own decode reaches a device as accesses (address, size, direction, data)
 * and the guest saves its registers and flags afterwards; the emulator, given the same bytes
 * and starting registers, must predict the same accesses and the same registers. In 64-bit
 * long mode, in 32-bit protected mode (flat segments, paging off, as a multiboot kernel
 * starts: no REX, no RIP-relative, ARPL for 63) and in 16-bit real mode (16-bit operands and
 * ModRM addressing by default, all below 64 KiB).
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { type AccessSize, destroyVcpuPool, type HighWord, joinWords, splitWords, Vm } from "../runtime/index.js";
import {
  type CodeSize, emulateMmioInstruction, type X86State, X86DecodeError,
} from "../runtime/hypervisor/x86/mmio-emulator.js";
import { multibootCpuState } from "../runtime/boot/multiboot-cpu.js";
import { imm32, imm64 } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
/** Where a mode's guest keeps its code, results, MMIO region and scratch RAM. */
interface Layout {
  code: number;
  results: number;
  /** Bytes per case's saved registers and flags (a register every 8 bytes, flags at 16 × 8... or 8 × 4 in 16-bit code). */
  resultBytes: number;
  mmio: number;
  mmioLength: number;
  /** Memory operands start in [mmio + 0x100, mmio + 0x100 + operandSpan). */
  operandSpan: number;
  scratch: number;
  scratchLength: number;
  cases: number;
}
/** RAM a string move reads from: a known pattern the guest never writes. */
const CASE_PORT = 0xe9;
const CASES = Number(process.env.MMIO_EMULATOR_CASES ?? 3000);
const WIDE: Omit<Layout, "cases"> = {
  code: 0x100000, results: 0x600000, resultBytes: 17 * 8, mmio: 0x4000_0000, mmioLength: 0x10000, operandSpan: 0xee00,
  scratch: 0x700000, scratchLength: 0x10000,
};
/**
 * Real mode reaches 64 KiB with segment bases of zero: everything lives below it, the MMIO
 * region in a hole in RAM, and fewer cases fit (three of each form).
 */
const REAL_MODE: Layout = {
  code: 0x1000, results: 0x9000, resultBytes: 9 * 4, mmio: 0xc000, mmioLength: 0x2000, operandSpan: 0x600,
  scratch: 0xe000, scratchLength: 0x1000, cases: Math.min(CASES, 270),
};
const LAYOUTS: Record<CodeSize, Layout> = { 64: { ...WIDE, cases: CASES }, 32: { ...WIDE, cases: CASES }, 16: REAL_MODE };
const M64 = (1n << 64n) - 1n;

/** The byte the MMIO device answers at `address`: reads of any width compose from it. */
function mmioByte(address: number): number {
  return (address * 31 + 7) & 0xff;
}
function scratchByte(address: number): number {
  return (address * 13 + 91) & 0xff;
}

function composed(address: number, size: number, byteAt: (a: number) => number): bigint {
  let value = 0n;
  for (let b = size - 1; b >= 0; b--) value = (value << 8n) | BigInt(byteAt(address + b));
  return value;
}

interface Access {
  address: number;
  size: number;
  write: boolean;
  value: bigint;
}

class LoggingMmio {
  readonly name = "logging mmio";
  readonly log: { kase: number; access: Access }[] = [];
  kase = -1;
  constructor(private readonly base: number) {}
  read(offset: number, size: AccessSize, wide: HighWord): number {
    const value = composed(this.base + offset, size, mmioByte);
    this.log.push({ kase: this.kase, access: { address: this.base + offset, size, write: false, value } });
    return splitWords(value, wide);
  }
  write(offset: number, size: AccessSize, value: number, high: number): void {
    this.log.push({ kase: this.kase, access: { address: this.base + offset, size, write: true, value: joinWords(value, high) } });
  }
}

/** A small deterministic generator (xorshift), so a failure can be reproduced. */
class Random {
  constructor(private state: bigint) {}
  next(): bigint {
    let x = this.state;
    x ^= (x << 13n) & M64;
    x ^= x >> 7n;
    x ^= (x << 17n) & M64;
    this.state = x & M64;
    return this.state;
  }
  int(n: number): number {
    return Number(this.next() % BigInt(n));
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  chance(p: number): boolean {
    return this.int(1000) < p * 1000;
  }
}

interface Form {
  name: string;
  opcode: number[];
  /** ModRM reg field when the opcode fixes it (group opcodes), else any register. */
  fixedReg?: number;
  sizes: number[];
  /** Immediate bytes for an operand size. */
  immediate?: (size: number) => number;
  /** The reg field names a destination register (loads): it must not be RSP. */
  writesReg?: boolean;
  string?: "movs" | "stos" | "lods";
  moffs?: boolean;
}

function forms(): Form[] {
  const list: Form[] = [
    { name: "mov r/m8, r8", opcode: [0x88], sizes: [1] },
    { name: "mov r/m, r", opcode: [0x89], sizes: [2, 4, 8] },
    { name: "mov r8, r/m8", opcode: [0x8a], sizes: [1], writesReg: true },
    { name: "mov r, r/m", opcode: [0x8b], sizes: [2, 4, 8], writesReg: true },
    { name: "mov r/m8, imm8", opcode: [0xc6], fixedReg: 0, sizes: [1], immediate: () => 1 },
    { name: "mov r/m, imm", opcode: [0xc7], fixedReg: 0, sizes: [2, 4, 8], immediate: (s) => Math.min(s, 4) },
    { name: "movzx r, r/m8", opcode: [0x0f, 0xb6], sizes: [2, 4, 8], writesReg: true },
    { name: "movzx r, r/m16", opcode: [0x0f, 0xb7], sizes: [4, 8], writesReg: true },
    { name: "movsx r, r/m8", opcode: [0x0f, 0xbe], sizes: [2, 4, 8], writesReg: true },
    { name: "movsx r, r/m16", opcode: [0x0f, 0xbf], sizes: [4, 8], writesReg: true },
    { name: "movsxd r, r/m32", opcode: [0x63], sizes: [4, 8], writesReg: true },
    { name: "test r/m8, r8", opcode: [0x84], sizes: [1] },
    { name: "test r/m, r", opcode: [0x85], sizes: [2, 4, 8] },
    { name: "xchg r/m8, r8", opcode: [0x86], sizes: [1], writesReg: true },
    { name: "xchg r/m, r", opcode: [0x87], sizes: [2, 4, 8], writesReg: true },
    { name: "test r/m8, imm8", opcode: [0xf6], fixedReg: 0, sizes: [1], immediate: () => 1 },
    { name: "test r/m, imm", opcode: [0xf7], fixedReg: 0, sizes: [2, 4, 8], immediate: (s) => Math.min(s, 4) },
    { name: "mov al, moffs", opcode: [0xa0], sizes: [1], moffs: true },
    { name: "mov eax, moffs", opcode: [0xa1], sizes: [2, 4, 8], moffs: true },
    { name: "mov moffs, al", opcode: [0xa2], sizes: [1], moffs: true },
    { name: "mov moffs, eax", opcode: [0xa3], sizes: [2, 4, 8], moffs: true },
    { name: "movsb", opcode: [0xa4], sizes: [1], string: "movs" },
    { name: "movs", opcode: [0xa5], sizes: [2, 4, 8], string: "movs" },
    { name: "stosb", opcode: [0xaa], sizes: [1], string: "stos" },
    { name: "stos", opcode: [0xab], sizes: [2, 4, 8], string: "stos" },
    { name: "lodsb", opcode: [0xac], sizes: [1], string: "lods" },
    { name: "lods", opcode: [0xad], sizes: [2, 4, 8], string: "lods" },
  ];
  const alu = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"];
  alu.forEach((op, i) => {
    list.push({ name: `${op} r/m8, r8`, opcode: [i * 8], sizes: [1] });
    list.push({ name: `${op} r/m, r`, opcode: [i * 8 + 1], sizes: [2, 4, 8] });
    list.push({ name: `${op} r8, r/m8`, opcode: [i * 8 + 2], sizes: [1], writesReg: true });
    list.push({ name: `${op} r, r/m`, opcode: [i * 8 + 3], sizes: [2, 4, 8], writesReg: true });
    list.push({ name: `${op} r/m8, imm8`, opcode: [0x80], fixedReg: i, sizes: [1], immediate: () => 1 });
    list.push({ name: `${op} r/m, imm`, opcode: [0x81], fixedReg: i, sizes: [2, 4, 8], immediate: (s) => Math.min(s, 4) });
    list.push({ name: `${op} r/m, imm8`, opcode: [0x83], fixedReg: i, sizes: [2, 4, 8], immediate: () => 1 });
  });
  for (const [sub, name] of [[2, "not"], [3, "neg"]] as const) {
    list.push({ name: `${name} r/m8`, opcode: [0xf6], fixedReg: sub, sizes: [1] });
    list.push({ name: `${name} r/m`, opcode: [0xf7], fixedReg: sub, sizes: [2, 4, 8] });
  }
  for (const [sub, name] of [[0, "inc"], [1, "dec"]] as const) {
    list.push({ name: `${name} r/m8`, opcode: [0xfe], fixedReg: sub, sizes: [1] });
    list.push({ name: `${name} r/m`, opcode: [0xff], fixedReg: sub, sizes: [2, 4, 8] });
  }
  return list;
}

interface Case {
  form: string;
  bytes: Uint8Array;
  before: X86State;
}

const RSP = 4;
const FLAG_BITS = [0x1n, 0x4n, 0x10n, 0x40n, 0x80n, 0x800n];

/** The forms 32- and 16-bit code have: no 8-byte operands, no MOVSXD (63 is ARPL there). */
function formsFor(codeSize: CodeSize): Form[] {
  if (codeSize === 64) return forms();
  return forms()
    .filter((f) => f.opcode[0] !== 0x63)
    .map((f) => ({ ...f, sizes: f.sizes.filter((size) => size <= 4) }))
    .filter((f) => f.sizes.length > 0);
}

/** One instruction of `form` whose memory operand lands in the MMIO region, with its registers. */
function generateCase(random: Random, form: Form, rip: number, codeSize: CodeSize): Case {
  const long = codeSize === 64;
  const layout = LAYOUTS[codeSize];
  const size = random.pick(form.sizes);
  // 32- and 16-bit code have eight 32-bit registers: the rest stay zero, as the guest cannot see them.
  const gpr = Array.from({ length: 16 }, (_, r) => (long ? random.next() : r < 8 ? random.next() & 0xffff_ffffn : 0n));
  let rflags = 0x2n;
  for (const bit of FLAG_BITS) if (random.chance(0.5)) rflags |= bit;
  const prefixes: number[] = [];
  // 66 selects the operand size that is not the code's default.
  if (codeSize === 16 ? size === 4 : size === 2) prefixes.push(0x66);
  // 67 in 64-bit code: 32-bit addresses. (In 32-bit code it selects 16-bit addressing, which
  // cannot reach the MMIO region; GNU as checks that decode in mshv-backend.test.ts.)
  const address32 = long && !form.moffs && random.chance(0.15);
  if (address32) prefixes.push(0x67);
  // A CS override is ignored in 64-bit code; in 32-bit code a write through it faults (CS is not writable).
  if (random.chance(0.1)) prefixes.push(random.pick(long ? [0x3e, 0x26, 0x2e, 0x36] : [0x3e, 0x26, 0x36]));
  const ea = layout.mmio + 0x100 + random.int(layout.operandSpan);
  // Never across a page (KVM would split the access); string elements naturally aligned.
  const address = form.string ? ea - (ea % size) : Math.min(ea - (ea % 4096) + 4096 - size, ea);

  if (form.string) {
    const rep = random.chance(0.5);
    if (rep) prefixes.push(0xf3);
    const rex = !long ? 0 : size === 8 ? 0x48 : random.chance(0.2) ? 0x40 : 0;
    const down = random.chance(0.3);
    if (down) rflags |= 0x400n;
    const count = rep ? random.int(4) : 1;
    const span = Math.max(count, 1) * size;
    const mmio = down ? address + span : address;
    const ram = layout.scratch + 0x100 + random.int(layout.scratchLength - 0x200 - span);
    // A 32-bit (16-bit) address size counts in ECX (CX) alone: garbage above it must not matter.
    const high = () => (address32 ? random.next() & ~0xffff_ffffn : codeSize === 16 ? random.next() & 0xffff_0000n : 0n);
    if (rep) gpr[1] = high() | BigInt(count);
    if (form.string === "movs") {
      const ramSource = ram - (ram % size) + (down ? span : 0);
      gpr[6] = high() | BigInt(random.chance(0.5) ? ramSource : mmio + 0x800);
      gpr[7] = high() | BigInt(mmio);
    } else if (form.string === "stos") {
      gpr[7] = high() | BigInt(mmio);
    } else {
      gpr[6] = high() | BigInt(mmio);
    }
    const bytes = [...prefixes, ...(rex ? [rex] : []), ...form.opcode];
    return { form: form.name, bytes: Uint8Array.from(bytes), before: { gpr, rip: BigInt(rip), rflags } };
  }

  if (form.moffs) {
    const rex = !long ? 0 : size === 8 ? 0x48 : random.chance(0.2) ? 0x40 : 0;
    const offset = long ? imm64(BigInt(address)) : codeSize === 32 ? imm32(address) : [address & 0xff, address >> 8];
    const bytes = [...prefixes, ...(rex ? [rex] : []), ...form.opcode, ...offset];
    return { form: form.name, bytes: Uint8Array.from(bytes), before: { gpr, rip: BigInt(rip), rflags } };
  }

  if (codeSize === 16) return modrm16Case(random, form, size, prefixes, address, gpr, rip, rflags);

  // ModRM forms. Registers: reg field, base and index chosen apart; RSP only where harmless.
  const allowRexByteRegs = long && random.chance(0.5);
  const wantRex = size === 8 || allowRexByteRegs;
  const registers = long ? 16 : 8;
  // Never RSP or SPL (the harness's stack); AH..BH (5..7 without REX) stay covered.
  let reg = form.fixedReg ?? random.int(wantRex ? 16 : 8);
  if (form.fixedReg === undefined && reg === RSP) reg = 0;
  // "rip": RIP-relative in 64-bit code, an absolute disp32 in 32-bit code (same encoding).
  const shape = random.pick(["base", "sib", "sib-no-base", "rip"] as const);
  const mod = shape === "rip" || shape === "sib-no-base" ? 0 : random.pick([0, 1, 2]);
  let base = random.int(registers);
  while (base === RSP || base === 12 || (mod === 0 && (base & 7) === 5 && shape !== "sib-no-base") || (shape !== "sib-no-base" && base === reg && form.fixedReg === undefined)) base = random.int(registers);
  let index = random.int(registers);
  while (index === RSP || index === base || (index === reg && form.fixedReg === undefined)) index = random.int(registers);
  const scaleBits = random.int(4);
  const dispBytes = mod === 1 ? 1 : mod === 2 || shape === "rip" || shape === "sib-no-base" ? 4 : 0;
  let displacement = dispBytes === 1 ? BigInt(random.int(256) - 128) : dispBytes === 4 ? BigInt(random.int(0x2000) - 0x1000) : 0n;
  const indexValue = BigInt(random.int(0x800));
  const rexBits = (size === 8 ? 8 : 0) | ((reg & 8) >> 1) |
    (shape === "sib" || shape === "sib-no-base" ? (index & 8) >> 2 : 0) | (shape === "rip" || shape === "sib-no-base" ? 0 : (base & 8) >> 3);
  const rex = rexBits !== 0 || wantRex ? 0x40 | rexBits : 0;
  const modrm = [(mod << 6) | ((reg & 7) << 3) | (shape === "base" ? base & 7 : shape === "rip" ? 5 : 4)];
  if (shape === "sib") modrm.push((scaleBits << 6) | ((index & 7) << 3) | (base & 7));
  if (shape === "sib-no-base") modrm.push((scaleBits << 6) | ((index & 7) << 3) | 5);
  const high = address32 ? random.next() & ~0xffff_ffffn : 0n;
  const immediateBytes = form.immediate?.(size) ?? 0;
  const immediate = Array.from({ length: immediateBytes }, () => random.int(256));
  const head = [...prefixes, ...(rex ? [rex] : []), ...form.opcode, ...modrm];
  const length = head.length + dispBytes + immediateBytes;
  const scaled = (v: bigint) => v << BigInt(scaleBits);
  switch (shape) {
    case "base":
      gpr[base] = high | (BigInt(address) - displacement);
      break;
    case "sib":
      gpr[index] = high | indexValue;
      gpr[base] = high | (BigInt(address) - displacement - scaled(indexValue));
      break;
    case "sib-no-base":
      gpr[index] = high | indexValue;
      displacement = BigInt(address) - scaled(indexValue);
      break;
    case "rip":
      displacement = long ? BigInt(address) - BigInt(rip + length) : BigInt(address);
      break;
  }
  const disp = dispBytes === 1 ? [Number(displacement & 0xffn)] : dispBytes === 4 ? imm32(Number(displacement & 0xffff_ffffn)) : [];
  const bytes = [...head, ...disp, ...immediate];
  return { form: form.name, bytes: Uint8Array.from(bytes), before: { gpr, rip: BigInt(rip), rflags } };
}

/** 16-bit ModRM addressing: base and index of r/m 0-7 (BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP, BX). */
const ADDRESS16: readonly (readonly number[])[] = [[3, 6], [3, 7], [5, 6], [5, 7], [6], [7], [5], [3]];

/**
 * A ModRM form with 16-bit addressing: the registers' upper 16 bits are random (16-bit
 * addressing must ignore them) and the sum wraps at 64 KiB, as disp16 may make it.
 */
function modrm16Case(
  random: Random, form: Form, size: number, prefixes: number[], address: number, gpr: bigint[], rip: number, rflags: bigint,
): Case {
  let reg = form.fixedReg ?? random.int(8);
  if (form.fixedReg === undefined && reg === RSP) reg = 0;
  const rm = random.int(8);
  const mod = random.pick([0, 1, 2]);
  const absolute = mod === 0 && rm === 6;
  const displacement = absolute ? address : mod === 1 ? random.int(256) - 128 : mod === 2 ? random.int(0x10000) : 0;
  const dispBytes = absolute || mod === 2 ? 2 : mod === 1 ? 1 : 0;
  if (!absolute) {
    const [base, index] = ADDRESS16[rm];
    const upper = () => random.next() & 0xffff_0000n;
    let rest = address - displacement;
    if (index !== undefined) {
      const indexValue = random.int(0x10000);
      gpr[index] = upper() | BigInt(indexValue);
      rest -= indexValue;
    }
    gpr[base] = upper() | BigInt(rest & 0xffff);
  }
  const disp = dispBytes === 1 ? [displacement & 0xff] : dispBytes === 2 ? [displacement & 0xff, (displacement >> 8) & 0xff] : [];
  const immediate = Array.from({ length: form.immediate?.(size) ?? 0 }, () => random.int(256));
  const bytes = [...prefixes, ...form.opcode, (mod << 6) | ((reg & 7) << 3) | rm, ...disp, ...immediate];
  return { form: form.name, bytes: Uint8Array.from(bytes), before: { gpr, rip: BigInt(rip), rflags } };
}

const REG_NAMES = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/** Guest code for one case: load registers and flags, run the instruction, save them, mark. */
function harness(kase: Case, index: number, codeSize: CodeSize): number[] {
  if (codeSize === 32) return harness32(kase, index);
  if (codeSize === 16) return harness16(kase, index);
  const code: number[] = [];
  for (let r = 0; r < 16; r++) {
    if (r === RSP) continue;
    code.push(0x48 | (r >> 3), 0xb8 + (r & 7), ...imm64(kase.before.gpr[r])); // mov r, imm64
  }
  code.push(0x68, ...imm32(Number(kase.before.rflags))); // push imm32
  code.push(0x9d); // popfq
  code.push(...kase.bytes);
  const results = WIDE.results + index * WIDE.resultBytes;
  for (let r = 0; r < 16; r++) {
    code.push(0x48 | ((r >> 3) << 2), 0x89, 0x04 | ((r & 7) << 3), 0x25, ...imm32(results + r * 8)); // mov [results + 8r], r
  }
  code.push(0x9c); // pushfq
  code.push(0x8f, 0x04, 0x25, ...imm32(results + 16 * 8)); // pop qword [results + 128]
  code.push(0xb8, ...imm32(index), 0xe7, CASE_PORT); // mov eax, index; out CASE_PORT, eax
  return code;
}

/** The same in 32-bit code: seven `mov r32, imm32`, `push imm32`, `popfd`; `mov [abs32], r32` after. */
function harness32(kase: Case, index: number): number[] {
  const code: number[] = [];
  for (let r = 0; r < 8; r++) {
    if (r === RSP) continue;
    code.push(0xb8 + r, ...imm32(Number(kase.before.gpr[r]))); // mov r32, imm32
  }
  code.push(0x68, ...imm32(Number(kase.before.rflags))); // push imm32
  code.push(0x9d); // popfd
  code.push(...kase.bytes);
  const results = WIDE.results + index * WIDE.resultBytes;
  for (let r = 0; r < 8; r++) code.push(0x89, 0x05 | (r << 3), ...imm32(results + r * 8)); // mov [results + 8r], r32
  code.push(0x9c); // pushfd
  code.push(0x8f, 0x05, ...imm32(results + 16 * 8)); // pop dword [results + 128]
  code.push(0xb8, ...imm32(index), 0xe7, CASE_PORT); // mov eax, index; out CASE_PORT, eax
  return code;
}

/** Real mode: `mov r32, imm32` (66 B8+r), `push imm16`, `popf`; `mov [abs16], r32` (66 89 /r) after. */
function harness16(kase: Case, index: number): number[] {
  const imm16 = (v: number) => [v & 0xff, (v >> 8) & 0xff];
  const code: number[] = [];
  for (let r = 0; r < 8; r++) {
    if (r === RSP) continue;
    code.push(0x66, 0xb8 + r, ...imm32(Number(kase.before.gpr[r]))); // mov r32, imm32
  }
  code.push(0x68, ...imm16(Number(kase.before.rflags))); // push imm16
  code.push(0x9d); // popf
  code.push(...kase.bytes);
  const results = REAL_MODE.results + index * REAL_MODE.resultBytes;
  for (let r = 0; r < 8; r++) code.push(0x66, 0x89, 0x06 | (r << 3), ...imm16(results + r * 4)); // mov [results + 4r], r32
  code.push(0x9c); // pushf
  code.push(0x8f, 0x06, ...imm16(results + 8 * 4)); // pop word [results + 32]
  code.push(0xb8, ...imm16(index), 0xe7, CASE_PORT); // mov ax, index; out CASE_PORT, ax
  return code;
}

const ARITH_AND_DF = 0x8d5n | 0x400n;
/** Before the instruction: fifteen `mov r, imm64` (10 bytes each) or seven `mov r32, imm32` (5), `push imm32` (5), `popf` (1). */
const HARNESS_PROLOGUE_BYTES: Record<CodeSize, number> = { 64: 15 * 10 + 5 + 1, 32: 7 * 5 + 5 + 1, 16: 7 * 6 + 3 + 1 };
/** The stack of the 32-bit harness (the flat loader gives 64-bit code one below its entry). */
const STACK_TOP_32 = 0xff000;

for (const codeSize of [64, 32, 16] as const) {
  const what = { 64: "64-bit long mode", 32: "32-bit protected mode", 16: "16-bit real mode" }[codeSize];
  test(`the MMIO emulator predicts KVM's accesses and registers for ${LAYOUTS[codeSize].cases} generated instructions in ${what}`, { timeout: 300_000 }, async () => {
    await checkAgainstKvm(codeSize);
  });
}

async function checkAgainstKvm(codeSize: CodeSize): Promise<void> {
  const random = new Random({ 64: 0x9e37_79b9_7f4a_7c15n, 32: 0x2545_f491_4f6c_dd1dn, 16: 0x1405_7b7e_f767_814fn }[codeSize]);
  const layout = LAYOUTS[codeSize];
  const all = formsFor(codeSize);
  const cases: Case[] = [];
  const code: number[] = [];
  const starts: number[] = [];
  for (let i = 0; i < layout.cases; i++) {
    const form = all[i % all.length];
    starts.push(layout.code + code.length);
    const kase = generateCase(random, form, layout.code + code.length + HARNESS_PROLOGUE_BYTES[codeSize], codeSize);
    cases.push(kase);
    code.push(...harness(kase, i, codeSize));
  }
  /** Names the case whose code holds `rip`, for a guest that died inside one. */
  const caseAt = (rip: number) => {
    let i = starts.length - 1;
    while (i > 0 && starts[i] > rip) i--;
    return `case ${i} ${cases[i].form} [${Buffer.from(cases[i].bytes).toString("hex")}]`;
  };
  if (codeSize === 16) code.push(0xb8, 0, 0, 0xe7, 0xf4, 0xf4); // mov ax, 0; out 0xf4, ax; hlt
  else code.push(0xb8, ...imm32(0), 0xe7, 0xf4, 0xf4); // mov eax, 0; out 0xf4, eax; hlt
  if (layout.code + code.length > layout.results) throw new Error(`${code.length} bytes of guest code run into the results`);

  const device = new LoggingMmio(layout.mmio);
  // Real mode: RAM with a hole for the MMIO region, all below 64 KiB.
  const end = layout.mmio + layout.mmioLength;
  const vm = Vm.create({ memory: codeSize === 16 ? [{ gpa: 0, size: layout.mmio }, { gpa: end, size: 2 * MiB - end }] : 8 * MiB });
  const memory = vm.memory;
  try {
    vm.addDebugExit();
    vm.addDevice({ space: "mmio", base: layout.mmio, length: layout.mmioLength, device, sync: true });
    vm.addDevice({
      space: "pio", base: CASE_PORT, length: 1, sync: true,
      device: { name: "case marker", read: () => 0, write: (_o, _s, v) => void (device.kase = Number(v) + 1) },
    });
    for (let a = 0; a < layout.scratchLength; a++) vm.memory.writeU8(layout.scratch + a, scratchByte(layout.scratch + a));
    if (codeSize === 64) {
      vm.loadProgram({ code, entry: layout.code });
    } else if (codeSize === 16) {
      vm.loadProgram({ code, entry: layout.code, mode: "real16" }); // stack just below the code
    } else {
      vm.memory.write(layout.code, code);
      const state = multibootCpuState(vm.memory, { entry: layout.code, eax: 0, ebx: 0, kernelEnd: layout.code + code.length });
      vm.setCpuState(0, { ...state, registers: { ...state.registers, rsp: BigInt(STACK_TOP_32) } });
    }
    device.kase = 0;
    const result = await vm.run().catch((error: Error & { registers?: { rip: string } }) => {
      if (error.registers) error.message += `\n  in ${caseAt(Number(error.registers.rip))}`;
      throw error;
    });
    assert.deepEqual(result, { reason: "debug-exit", status: 0 });
  } finally {
    await vm.stop();
  }

  const byCase = new Map<number, Access[]>();
  for (const { kase, access } of device.log) {
    if (!byCase.has(kase)) byCase.set(kase, []);
    byCase.get(kase)!.push(access);
  }
  const failures: string[] = [];
  for (let i = 0; i < cases.length && failures.length < 10; i++) {
    const kase = cases[i];
    const state: X86State = { gpr: [...kase.before.gpr], rip: kase.before.rip, rflags: kase.before.rflags };
    const predicted: Access[] = [];
    try {
      emulateMmioInstruction(kase.bytes, state, {
        read(address, size) {
          const a = Number(address);
          if (a >= layout.mmio && a < layout.mmio + layout.mmioLength) {
            const value = composed(a, size, mmioByte);
            predicted.push({ address: a, size, write: false, value });
            return value;
          }
          if (a >= layout.scratch && a + size <= layout.scratch + layout.scratchLength) return composed(a, size, scratchByte);
          throw new Error(`read outside MMIO and scratch at 0x${a.toString(16)}`);
        },
        write(address, size, value) {
          predicted.push({ address: Number(address), size, write: true, value: value & ((1n << BigInt(size * 8)) - 1n) });
        },
      }, codeSize);
    } catch (error) {
      if (error instanceof X86DecodeError) failures.push(`case ${i} ${kase.form} [${Buffer.from(kase.bytes).toString("hex")}]: ${error.message}`);
      else throw error;
      continue;
    }
    const seen = byCase.get(i) ?? [];
    const show = (list: Access[]) => list.map((a) => `${a.write ? "W" : "R"}${a.size}@${a.address.toString(16)}=${a.value.toString(16)}`).join(" ");
    if (show(seen) !== show(predicted)) {
      failures.push(`case ${i} ${kase.form} [${Buffer.from(kase.bytes).toString("hex")}]: KVM ${show(seen) || "none"}, emulator ${show(predicted) || "none"}`);
      continue;
    }
    const at = layout.results + i * layout.resultBytes;
    const stride = codeSize === 16 ? 4 : 8;
    for (let r = 0; r < (codeSize === 64 ? 16 : 8); r++) {
      if (r === RSP) continue;
      const kvm = vmValue(at + r * stride);
      if (kvm !== state.gpr[r]) failures.push(`case ${i} ${kase.form} [${Buffer.from(kase.bytes).toString("hex")}]: ${REG_NAMES[r]} KVM 0x${kvm.toString(16)}, emulator 0x${state.gpr[r].toString(16)}`);
    }
    const flags = vmValue(at + (codeSize === 16 ? 8 * 4 : 16 * 8)) & ARITH_AND_DF;
    if (flags !== (state.rflags & ARITH_AND_DF)) {
      failures.push(`case ${i} ${kase.form} [${Buffer.from(kase.bytes).toString("hex")}]: rflags KVM 0x${flags.toString(16)}, emulator 0x${(state.rflags & ARITH_AND_DF).toString(16)}`);
    }
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cases.length} cases differ`);

  function vmValue(gpa: number): bigint {
    return codeSize === 64 ? memory.readU64(gpa) : BigInt(memory.readU32(gpa));
  }
}
