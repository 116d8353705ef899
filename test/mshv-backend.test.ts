/**
 * The /dev/mshv backend on a host without Microsoft Hypervisor: it must refuse clearly.
 * And the x86 emulator its GPA intercepts rely on, checked against a third party in the
 * code sizes KVM cannot check it in here: GNU as assembles each instruction, and the
 * emulator must find the assembler's length, the access width, the direction, the
 * register, and (16-bit addressing) the address.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm } from "../runtime/vm.js";
import { HypervisorUnavailableError } from "../runtime/hypervisor/hypervisor.js";
import {
  type CodeSize, emulateMmioInstruction, type MmioAccess, type X86State, X86DecodeError,
} from "../runtime/hypervisor/x86/mmio-emulator.js";

test('backend "mshv" on a host without /dev/mshv fails with a clear HypervisorUnavailableError', (t) => {
  if (existsSync("/dev/mshv")) return t.skip("this host has /dev/mshv");
  assert.throws(() => Vm.create({ memory: 1 << 20, backend: "mshv" }), (error: Error) => {
    assert.ok(error instanceof HypervisorUnavailableError, `${error.name}: ${error.message}`);
    assert.match(error.message, /\/dev\/mshv does not exist/);
    assert.match(error.message, /root partition over Microsoft Hypervisor/);
    assert.match(error.message, /use backend "kvm"/);
    return true;
  });
});

test("an unknown backend name lists the ones that exist", () => {
  assert.throws(() => Vm.create({ memory: 1 << 20, backend: "gunyah" as never }), /unknown hypervisor backend 'gunyah'; available: kvm, mshv/);
});

interface Expected {
  asm: string;
  size: number;
  write: boolean;
  /** The register stored or loaded (x86 number), -1 for an immediate store. */
  register: number;
  highByte?: boolean;
  immediate?: bigint;
  signExtend?: boolean;
  destinationSize?: number;
  /** The address the access goes to, with the registers of `registersFor` (checked when given). */
  address?: bigint;
}

// AT&T syntax; registers by x86 number (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8.. r8..).
const CASES: Expected[] = [
  { asm: "movb %al,(%rbx)", size: 1, write: true, register: 0 },
  { asm: "movw %cx,0x10(%rax,%rbx,2)", size: 2, write: true, register: 1 },
  { asm: "movl %edx,0x12345678(%rip)", size: 4, write: true, register: 2 },
  { asm: "movq %r9,-8(%rsp)", size: 8, write: true, register: 9 },
  { asm: "movl (%rbp),%esi", size: 4, write: false, register: 6, destinationSize: 4 },
  { asm: "movl 0x1000,%eax", size: 4, write: false, register: 0, destinationSize: 4 },
  { asm: "movq 0x7fffffff(,%r11,8),%r15", size: 8, write: false, register: 15, destinationSize: 8 },
  { asm: "movb (%rdx),%bh", size: 1, write: false, register: 3, highByte: true, destinationSize: 1 },
  { asm: "movb (%rdx),%sil", size: 1, write: false, register: 6, highByte: false, destinationSize: 1 },
  { asm: "movw (%r8),%r14w", size: 2, write: false, register: 14, destinationSize: 2 },
  { asm: "movl $0x11223344,(%r13)", size: 4, write: true, register: -1, immediate: 0x1122_3344n },
  { asm: "movq $-1,(%rax)", size: 8, write: true, register: -1, immediate: 0xffff_ffff_ffff_ffffn },
  { asm: "movb $0x7f,0x40(%rdi)", size: 1, write: true, register: -1, immediate: 0x7fn },
  { asm: "movw $0x8001,(%rcx,%rdx)", size: 2, write: true, register: -1, immediate: 0x8001n },
  { asm: "movabs 0x1122334455667788,%al", size: 1, write: false, register: 0, destinationSize: 1, address: 0x1122_3344_5566_7788n },
  { asm: "movabs %rax,0x1122334455667788", size: 8, write: true, register: 0, address: 0x1122_3344_5566_7788n },
  { asm: "movzbl (%rsi),%ecx", size: 1, write: false, register: 1, destinationSize: 4 },
  { asm: "movzwq (%rsi),%r10", size: 2, write: false, register: 10, destinationSize: 8 },
  { asm: "movsbq 4(%rax),%rdx", size: 1, write: false, register: 2, signExtend: true, destinationSize: 8 },
  { asm: "movswl (%rbx),%edi", size: 2, write: false, register: 7, signExtend: true, destinationSize: 4 },
  { asm: "movl %fs:0x10(%rax),%eax", size: 4, write: false, register: 0, destinationSize: 4 },
  { asm: "addr32 movl (%eax),%ecx", size: 4, write: false, register: 1, destinationSize: 4 },
  { asm: "movl %eax,%es:(%rbx)", size: 4, write: true, register: 0 },
  { asm: "movw %ax,%gs:0x8(%r12,%r13,4)", size: 2, write: true, register: 0 },
];

/** Assembles each line with GNU as and returns its bytes, one entry per instruction. */
function assemble(lines: string[], bits: CodeSize = 64): Uint8Array[] {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-mov-"));
  try {
    const directive = bits === 16 ? ".code16\n" : "";
    writeFileSync(join(dir, "moves.s"), `.text\n${directive}${lines.join("\n")}\n`);
    const as = spawnSync("as", [`--${bits === 64 ? 64 : 32}`, "-o", join(dir, "moves.o"), join(dir, "moves.s")], { encoding: "utf8" });
    if (as.error) throw new Error(`cannot run GNU as (binutils): ${as.error.message}`);
    assert.equal(as.status, 0, as.stderr);
    const machine = bits === 16 ? ["-m", "i8086"] : [];
    const dump = spawnSync("objdump", ["-d", "--insn-width=16", ...machine, join(dir, "moves.o")], { encoding: "utf8" });
    assert.equal(dump.status, 0, dump.stderr);
    const instructions = [...dump.stdout.matchAll(/^\s+[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t/gm)]
      .map((m) => new Uint8Array(m[1].trim().split(" ").map((h) => Number.parseInt(h, 16))));
    assert.equal(instructions.length, lines.length, "objdump listed a different number of instructions");
    return instructions;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const M64 = (1n << 64n) - 1n;
/** Registers whose every byte differs: a store's data names its source register. */
function registersFor(): bigint[] {
  return Array.from({ length: 16 }, (_, r) => BigInt(0x11 * (r + 1)) * 0x0101_0101_0101_0101n & M64);
}
const LOADED = 0x8899_aabb_ccdd_eeffn;

/** What a load leaves in the destination register, by the rules the emulator must follow. */
function loadedRegister(old: bigint, e: Expected, codeSize: CodeSize): bigint {
  const bits = BigInt(8 * e.size);
  let value = LOADED & ((1n << bits) - 1n);
  if (e.signExtend && value >> (bits - 1n)) value |= M64 ^ ((1n << bits) - 1n);
  if (e.highByte) return (old & ~0xff00n) | ((value & 0xffn) << 8n);
  const destination = e.destinationSize ?? e.size;
  if (destination >= 4) return value & (destination === 4 || codeSize !== 64 ? 0xffff_ffffn : M64);
  const keep = (1n << BigInt(8 * destination)) - 1n;
  return (old & ~keep) | (value & keep);
}

function checkAgainstAssembler(cases: Expected[], codeSize: CodeSize, filler: number): void {
  const encoded = assemble(cases.map((c) => c.asm), codeSize);
  cases.forEach((expected, i) => {
    const bytes = new Uint8Array(16).fill(filler); // what follows in memory must not matter
    bytes.set(encoded[i]);
    const label = `${expected.asm} (${Buffer.from(encoded[i]).toString("hex")})`;
    const before = registersFor();
    const state: X86State = { gpr: [...before], rip: 0x1000n, rflags: 2n };
    const accesses: MmioAccess[] = [];
    emulateMmioInstruction(bytes, state, {
      read: (address, size) => (accesses.push({ address, size, write: false, value: 0n }), LOADED & ((1n << BigInt(8 * size)) - 1n)),
      write: (address, size, value) => void accesses.push({ address, size, write: true, value }),
    }, codeSize);
    assert.equal(accesses.length, 1, `${label}: one access`);
    const [access] = accesses;
    assert.equal(state.rip - 0x1000n, BigInt(encoded[i].length), `${label}: length`);
    assert.equal(access.size, expected.size, `${label}: size`);
    assert.equal(access.write, expected.write, `${label}: direction`);
    if (expected.address !== undefined) assert.equal(access.address, expected.address, `${label}: address`);
    if (expected.write) {
      const source = expected.register < 0
        ? expected.immediate!
        : expected.highByte ? (before[expected.register] >> 8n) & 0xffn : before[expected.register];
      assert.equal(access.value, source & ((1n << BigInt(8 * expected.size)) - 1n), `${label}: stored value (register or immediate)`);
      assert.deepEqual(state.gpr, before, `${label}: a store changes no register`);
    } else {
      const after = [...before];
      after[expected.register] = loadedRegister(before[expected.register], expected, codeSize);
      assert.deepEqual(state.gpr.map((v) => v.toString(16)), after.map((v) => v.toString(16)), `${label}: destination register`);
    }
  });
}

test("the x86 emulator agrees with GNU as on length, width, direction and register (64-bit code)", () => {
  checkAgainstAssembler(CASES, 64, 0x90);
});

// 32-bit protected mode: no REX (0x40-0x4f are INC/DEC there), moffs are 4 bytes.
const CASES_32: Expected[] = [
  { asm: "movl %ecx,(%eax)", size: 4, write: true, register: 1 },
  { asm: "movw %dx,0x10(%ebx,%esi,4)", size: 2, write: true, register: 2 },
  { asm: "movb (%esi),%ah", size: 1, write: false, register: 0, highByte: true, destinationSize: 1 },
  { asm: "movl 0x1000,%eax", size: 4, write: false, register: 0, destinationSize: 4, address: 0x1000n },
  { asm: "movl %eax,0xfee000b0", size: 4, write: true, register: 0, address: 0xfee0_00b0n },
  { asm: "movzbl 4(%esp),%ecx", size: 1, write: false, register: 1, destinationSize: 4 },
  { asm: "movl $0xdeadbeef,(%edi)", size: 4, write: true, register: -1, immediate: 0xdead_beefn },
  // 0x67 selects 16-bit addressing: BX + SI + disp8, wrapping at 64 KiB.
  { asm: "addr16 movl 0x7f(%bx,%si),%eax", size: 4, write: false, register: 0, destinationSize: 4, address: (0x4444n + 0x7777n + 0x7fn) & 0xffffn },
];

test("in 32-bit code the x86 emulator agrees with GNU as too", () => {
  checkAgainstAssembler(CASES_32, 32, 0x40); // INC EAX after the instruction must not read as REX
});

// 16-bit code (real mode, or a 16-bit segment): 16-bit operands and ModRM addressing by default.
const CASES_16: Expected[] = [
  { asm: "movw %ax,(%bx,%si)", size: 2, write: true, register: 0, address: (0x4444n + 0x7777n) & 0xffffn },
  { asm: "movb 0x10(%bp),%cl", size: 1, write: false, register: 1, destinationSize: 1, address: (0x6666n + 0x10n) & 0xffffn },
  { asm: "movw 0x1234,%dx", size: 2, write: false, register: 2, destinationSize: 2, address: 0x1234n },
  { asm: "movl %eax,-2(%di)", size: 4, write: true, register: 0, address: (0x8888n - 2n) & 0xffffn },
  { asm: "movw $0xbeef,0x100(%bx,%di)", size: 2, write: true, register: -1, immediate: 0xbeefn, address: (0x4444n + 0x8888n + 0x100n) & 0xffffn },
  { asm: "addr32 movw (%eax,%ecx,2),%si", size: 2, write: false, register: 6, destinationSize: 2, address: (0x1111_1111n + 2n * 0x2222_2222n) & 0xffff_ffffn },
  { asm: "movb %al,0xb800", size: 1, write: true, register: 0, address: 0xb800n },
];

test("in 16-bit code the x86 emulator agrees with GNU as, addresses included", () => {
  checkAgainstAssembler(CASES_16, 16, 0x90);
});

test("the x86 emulator refuses what it does not decode, saying why", () => {
  const [reg, cut, mul] = assemble(["movl %ecx,%eax", "movl $0x11223344,(%rax)", "mull (%rax)"]);
  const memory = { read: () => 0n, write: () => {} };
  const emulate = (bytes: Uint8Array, codeSize: CodeSize = 64) =>
    () => emulateMmioInstruction(bytes, { gpr: registersFor(), rip: 0n, rflags: 2n }, memory, codeSize);
  assert.throws(emulate(reg), (e: Error) => e instanceof X86DecodeError && /register operand, not memory/.test(e.message));
  assert.throws(emulate(cut.subarray(0, 4)), /runs past/);
  assert.throws(emulate(mul), /multiply or divide/);
  const [arpl, incEax] = assemble(["arpl %ax,(%ebx)", "incl %eax"], 32);
  assert.throws(emulate(arpl, 32), /ARPL outside 64-bit code/);
  assert.throws(emulate(incEax, 32), /opcode 0x40 is not an MMIO instruction/);
});
