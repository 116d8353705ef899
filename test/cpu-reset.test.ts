/** Every vCPU starts with what a reset CPU has and KVM leaves unset: MXCSR, PAT, fast strings. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Vm } from "../runtime/vm.js";

const RESULTS = 0xa000;

// Runs at CPL3: KVM's instruction emulator, which runs CPL0 code on PVM hosts, lacks these.
// prettier-ignore
const reportFpuControl = [
  0x0f, 0xae, 0x1c, 0x25, 0x00, 0xa0, 0x00, 0x00, // stmxcsr [0xa000]
  0xd9, 0x3c, 0x25, 0x04, 0xa0, 0x00, 0x00,       // fnstcw [0xa004]
  0x31, 0xc0,                                     // xor eax, eax
  0xe6, 0xf4,                                     // out 0xf4, al
];

// rdmsr needs CPL0.
// prettier-ignore
const reportResetMsrs = [
  0xb9, 0x77, 0x02, 0x00, 0x00,                   // mov ecx, 0x277      ; IA32_PAT
  0x0f, 0x32,                                     // rdmsr
  0x89, 0x04, 0x25, 0x08, 0xa0, 0x00, 0x00,       // mov [0xa008], eax
  0x89, 0x14, 0x25, 0x0c, 0xa0, 0x00, 0x00,       // mov [0xa00c], edx
  0xb9, 0xa0, 0x01, 0x00, 0x00,                   // mov ecx, 0x1a0      ; IA32_MISC_ENABLE
  0x0f, 0x32,                                     // rdmsr
  0x89, 0x04, 0x25, 0x10, 0xa0, 0x00, 0x00,       // mov [0xa010], eax
  0x31, 0xc0,                                     // xor eax, eax
  0xe6, 0xf4,                                     // out 0xf4, al
];

async function runAndRead(code: number[], mode: "long64" | "user64"): Promise<Vm> {
  const vm = Vm.create({ memory: 2 << 20 });
  vm.addDebugExit();
  vm.loadProgram({ code, mode });
  try {
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
  } finally {
    await vm.stop();
  }
  return vm;
}

test("a guest reads the power-on MXCSR and x87 control word", async () => {
  const vm = await runAndRead(reportFpuControl, "user64");
  assert.equal(vm.memory.readU32(RESULTS), 0x1f80, "MXCSR");
  assert.equal(vm.memory.readU16(RESULTS + 4), 0x037f, "x87 control word");
});

test("a guest reads the power-on PAT and fast-string enable", async () => {
  const vm = await runAndRead(reportResetMsrs, "long64");
  assert.equal(vm.memory.readU64(RESULTS + 8), 0x0007_0406_0007_0406n, "IA32_PAT");
  assert.equal(vm.memory.readU32(RESULTS + 16) & 1, 1, "IA32_MISC_ENABLE.FAST_STRING");
});
