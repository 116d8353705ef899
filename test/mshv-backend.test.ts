/**
 * The /dev/mshv backend on a host without Microsoft Hypervisor: it must refuse clearly.
 * And the MOV decoder its GPA intercepts rely on, checked against a third party: GNU as
 * assembles each instruction, and the decoder must find the assembler's length, the
 * access width, the direction and the register.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm } from "../runtime/vm.js";
import { HypervisorUnavailableError } from "../runtime/hypervisor/hypervisor.js";
import { decodeMmioMove, MmioDecodeError } from "../runtime/hypervisor/mshv/mmio-move.js";

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
  register: number;
  highByte?: boolean;
  immediate?: bigint;
  signExtend?: boolean;
  destinationSize?: number;
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
  { asm: "movabs 0x1122334455667788,%al", size: 1, write: false, register: 0, destinationSize: 1 },
  { asm: "movabs %rax,0x1122334455667788", size: 8, write: true, register: 0 },
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
function assemble(lines: string[], bits: 32 | 64 = 64): Uint8Array[] {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-mov-"));
  try {
    writeFileSync(join(dir, "moves.s"), `.text\n${lines.join("\n")}\n`);
    const as = spawnSync("as", [`--${bits}`, "-o", join(dir, "moves.o"), join(dir, "moves.s")], { encoding: "utf8" });
    if (as.error) throw new Error(`cannot run GNU as (binutils): ${as.error.message}`);
    assert.equal(as.status, 0, as.stderr);
    const dump = spawnSync("objdump", ["-d", "--insn-width=16", join(dir, "moves.o")], { encoding: "utf8" });
    assert.equal(dump.status, 0, dump.stderr);
    const instructions = [...dump.stdout.matchAll(/^\s+[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t/gm)]
      .map((m) => new Uint8Array(m[1].trim().split(" ").map((h) => Number.parseInt(h, 16))));
    assert.equal(instructions.length, lines.length, "objdump listed a different number of instructions");
    return instructions;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the MOV decoder agrees with GNU as on length, width, direction and register", () => {
  const encoded = assemble(CASES.map((c) => c.asm));
  CASES.forEach((expected, i) => {
    const bytes = new Uint8Array(16);
    bytes.set(encoded[i]);
    bytes.fill(0x90, encoded[i].length); // what follows in memory must not matter
    const move = decodeMmioMove(bytes, 16, { long: true, defaultBig: false });
    const label = `${expected.asm} (${Buffer.from(encoded[i]).toString("hex")})`;
    assert.equal(move.length, encoded[i].length, `${label}: length`);
    assert.equal(move.size, expected.size, `${label}: size`);
    assert.equal(move.write, expected.write, `${label}: direction`);
    assert.equal(move.register, expected.register, `${label}: register`);
    assert.equal(move.highByte, expected.highByte ?? false, `${label}: high byte`);
    if (expected.immediate !== undefined) assert.equal(move.immediate, expected.immediate, `${label}: immediate`);
    if (!expected.write) {
      assert.equal(move.destinationSize, expected.destinationSize, `${label}: destination width`);
      assert.equal(move.signExtend, expected.signExtend ?? false, `${label}: sign extension`);
    }
  });
});

// 32-bit protected mode: no REX (0x40-0x4f are INC/DEC there), moffs are 4 bytes.
const CASES_32: Expected[] = [
  { asm: "movl %ecx,(%eax)", size: 4, write: true, register: 1 },
  { asm: "movw %dx,0x10(%ebx,%esi,4)", size: 2, write: true, register: 2 },
  { asm: "movb (%esi),%ah", size: 1, write: false, register: 0, highByte: true, destinationSize: 1 },
  { asm: "movl 0x1000,%eax", size: 4, write: false, register: 0, destinationSize: 4 },
  { asm: "movl %eax,0xfee000b0", size: 4, write: true, register: 0 },
  { asm: "movzbl 4(%esp),%ecx", size: 1, write: false, register: 1, destinationSize: 4 },
  { asm: "movl $0xdeadbeef,(%edi)", size: 4, write: true, register: -1, immediate: 0xdead_beefn },
];

test("in 32-bit code the MOV decoder agrees with GNU as too", () => {
  const encoded = assemble(CASES_32.map((c) => c.asm), 32);
  CASES_32.forEach((expected, i) => {
    const bytes = new Uint8Array(16).fill(0x40); // INC EAX after the instruction must not read as REX
    bytes.set(encoded[i]);
    const move = decodeMmioMove(bytes, 16, { long: false, defaultBig: true });
    const label = `${expected.asm} (${Buffer.from(encoded[i]).toString("hex")})`;
    assert.deepEqual(
      { length: move.length, size: move.size, write: move.write, register: move.register, highByte: move.highByte },
      { length: encoded[i].length, size: expected.size, write: expected.write, register: expected.register, highByte: expected.highByte ?? false },
      label,
    );
    if (expected.immediate !== undefined) assert.equal(move.immediate, expected.immediate, `${label}: immediate`);
  });
});

test("the MOV decoder refuses what it does not decode, saying why", () => {
  const [add, movs, reg, cut] = assemble(["addl %ecx,(%rax)", "rep movsb", "movl %ecx,%eax", "movl $0x11223344,(%rax)"]);
  const decode = (bytes: Uint8Array, available = bytes.length) =>
    () => decodeMmioMove(bytes, available, { long: true, defaultBig: false });
  assert.throws(decode(add), (e: Error) => e instanceof MmioDecodeError && /01 08 is not a MOV form/.test(e.message));
  assert.throws(decode(movs), /REP prefixes are not decoded/);
  assert.throws(decode(reg), /names a register, not memory/);
  assert.throws(decode(cut, 4), /end inside the immediate/);
  assert.throws(() => decodeMmioMove(add, add.length, { long: false, defaultBig: false }), /16-bit code/);
  const [addr16] = assemble(["addr16 movl (%bx,%si),%eax"], 32);
  assert.throws(() => decodeMmioMove(addr16, addr16.length, { long: false, defaultBig: true }), /16-bit addressing/);
});
