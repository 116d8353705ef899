/**
 * CPUID feature controls: what a guest's CPUID instruction returns after `-feature`, and
 * the refusals for unknown names and for features the host cannot give.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Vm } from "../runtime/vm.js";
import { VmConfigError } from "../runtime/errors.js";
import { openHypervisor } from "../runtime/hypervisor/backends.js";
import { CPU_FEATURES, hostHasFeature, parseCpuFeatures } from "../runtime/boot/cpu-features.js";
import { DEBUG_EXIT, imm16, imm32 } from "../runtime/guests/guest-bytes.js";

const CLI = fileURLToPath(new URL("../runtime/cli.js", import.meta.url));
const REPORT_PORT = 0x500;

/** Runs CPUID leaf 1 in the guest and returns the ECX it saw. */
async function guestLeaf1Ecx(cpuFeatures?: string): Promise<number> {
  let ecx = -1;
  const vm = Vm.create({ memory: 2 << 20, cpuFeatures });
  vm.addDevice({ space: "pio", base: REPORT_PORT, length: 4, sync: true, device: { name: "report", read: () => 0, write: (_o, _s, v) => void (ecx = Number(v) >>> 0) } });
  vm.addDebugExit();
  vm.loadProgram({
    code: [
      0xb8, ...imm32(1),                // mov eax, 1
      0x31, 0xc9,                       // xor ecx, ecx
      0x0f, 0xa2,                       // cpuid
      0x89, 0xc8,                       // mov eax, ecx
      0x66, 0xba, ...imm16(REPORT_PORT), // mov dx, REPORT_PORT
      0xef,                             // out dx, eax
      0x31, 0xc0,                       // xor eax, eax
      0xe6, DEBUG_EXIT,                 // out 0xf4, al
      0xf4,                             // hlt
    ],
    mode: "long64",
  });
  assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
  return ecx;
}

const X2APIC = 1 << 21;

test("-x2apic takes x2APIC out of the CPUID the guest reads; +x2apic leaves it", async () => {
  const hypervisor = openHypervisor();
  const hostHas = hostHasFeature(hypervisor.supportedCpuid(), "x2apic");
  hypervisor.close();
  assert.ok(hostHas, "this test needs a host whose KVM offers x2APIC (every in-kernel LAPIC does)");
  assert.equal((await guestLeaf1Ecx()) & X2APIC, X2APIC);
  assert.equal((await guestLeaf1Ecx("+x2apic")) & X2APIC, X2APIC);
  assert.equal((await guestLeaf1Ecx("-x2apic")) & X2APIC, 0);
  assert.equal((await guestLeaf1Ecx("x2apic=off")) & X2APIC, 0);
});

test("a feature the host cannot give is refused with its CPUID location; unknown names are listed", () => {
  const hypervisor = openHypervisor();
  const supported = hypervisor.supportedCpuid();
  hypervisor.close();
  const missing = Object.keys(CPU_FEATURES).find((name) => !hostHasFeature(supported, name));
  assert.ok(missing, "the host offers every known feature");
  assert.throws(() => Vm.create({ memory: 2 << 20, cpuFeatures: `+${missing}` }), (error: Error) =>
    error instanceof VmConfigError && new RegExp(`'${missing}' cannot be given: this host's hypervisor does not offer it`).test(error.message));
  assert.throws(() => parseCpuFeatures("+x2apic,-no-such-thing"), /unknown CPU feature 'no-such-thing' \(known: .*x2apic/);
  assert.throws(() => parseCpuFeatures("pcid=maybe"), /expected pcid=on or pcid=off/);
  assert.deepEqual(parseCpuFeatures("+x2apic,-pcid,tsc_deadline=on"), [
    { name: "x2apic", enable: true }, { name: "pcid", enable: false }, { name: "tsc-deadline", enable: true },
  ]);
  const run = spawnSync(process.execPath, [CLI, "run", "--kernel", CLI, `--cpu-features=+${missing}`], { encoding: "utf8" });
  assert.equal(run.status, 2);
  assert.match(run.stderr, /cannot be given/);
});
