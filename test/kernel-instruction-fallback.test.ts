/**
 * The kernel-instruction fallback for PVM hosts: an INT3 in kernel mode reaches the guest's
 * #BP handler with the saved RIP just past it, and an FWAIT with nothing pending does
 * nothing, as on hardware; each is counted. Without the fallback a PVM host fails the VM
 * there, which is why it exists.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { destroyVcpuPool, GuestFatalError, Vm } from "../runtime/index.js";
import { ON_PVM } from "./linux-guest.js";

after(() => destroyVcpuPool());

const ENTRY = 0x10000;
const IDT = 0xa000;
const HANDLER_OFFSET = 16;
const AFTER_INT3_OFFSET = 8;
const PROGRAM = [
  0x0f, 0x01, 0x1d, 25, 0, 0, 0, //  lidt [rip+25]  (the IDTR at offset 32)
  0xcc, //                           int3
  0xf4, //                           hlt (the handler exits first)
  0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
  0x48, 0x8b, 0x04, 0x24, //         handler: mov rax, [rsp]  (the saved RIP)
  0xe7, 0xf4, //                     out 0xf4, eax
  0xf4, //                           hlt
  0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
  63, 0, ...[IDT & 0xff, IDT >> 8, 0, 0, 0, 0, 0, 0], // IDTR: 4 gates, base
];

function int3Vm(fallback: boolean): Vm {
  const vm = Vm.create({ memory: 2 * 1024 * 1024 });
  vm.addDebugExit();
  vm.loadProgram({ code: PROGRAM, entry: ENTRY, mode: "long64" });
  const handler = ENTRY + HANDLER_OFFSET;
  // 64-bit interrupt gate for vector 3: selector 0x08 (the loader's kernel code), present, DPL 0.
  const gate = IDT + 3 * 16;
  vm.memory.writeU16(gate, handler & 0xffff);
  vm.memory.writeU16(gate + 2, 0x08);
  vm.memory.writeU8(gate + 4, 0);
  vm.memory.writeU8(gate + 5, 0x8e);
  vm.memory.writeU16(gate + 6, handler >>> 16);
  vm.memory.writeU32(gate + 8, 0);
  if (fallback) vm.completeUnemulatedKernelInstructions();
  return vm;
}

test("INT3 at CPL0 reaches the guest's #BP handler with RIP past it; the PVM fallback counts what it completed", async () => {
  const vm = int3Vm(true);
  const result = await vm.run();
  assert.deepEqual(result, { reason: "debug-exit", status: ENTRY + AFTER_INT3_OFFSET });
  assert.equal(vm.stats.kernelInstructionsCompleted, ON_PVM ? 1 : 0, "the fallback runs only where the host cannot");
});

test("without the fallback a PVM host fails the VM at a kernel-mode INT3", { skip: ON_PVM ? false : "the host runs INT3 itself (hardware virtualization)" }, async () => {
  const vm = int3Vm(false);
  await assert.rejects(vm.run(), (error: unknown) => error instanceof GuestFatalError && /internal-error/.test(error.message));
});

test("FWAIT at CPL0 with no x87 exception pending just goes on; the PVM fallback counts it", async () => {
  const vm = Vm.create({ memory: 2 * 1024 * 1024 });
  vm.addDebugExit();
  // fninit; fwait; fwait; mov al, 7; out 0xf4, al
  vm.loadProgram({ code: [0xdb, 0xe3, 0x9b, 0x9b, 0xb0, 0x07, 0xe6, 0xf4], mode: "long64" });
  vm.completeUnemulatedKernelInstructions();
  assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 7 });
  assert.equal(vm.stats.kernelInstructionsCompleted, ON_PVM ? 2 : 0);
});
