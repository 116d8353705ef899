/**
 * The page walker against KVM as the oracle: a 64-bit guest maps linear pages onto an MMIO
 * region through page tables of its own (2 MiB pages, an alias, a random and a reversed
 * 4 KiB table), writes through each mapping, and KVM reports the guest-physical address of
 * every write. The walker, given the same CR0/CR3/CR4/EFER and guest RAM, must find the
 * same address for each linear one. (1 GiB pages are walked but not checked here: KVM on
 * this host offers guests no pdpe1gb.)
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { type AccessSize, destroyVcpuPool, loadFlatProgram, Vm } from "../runtime/index.js";
import { linearToPhysical, PageWalkError } from "../runtime/hypervisor/x86/page-walk.js";
import { imm32, imm64 } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const MMIO_BASE = 0x4000_0000;
const MMIO_LENGTH = 4 * MiB;
const PRESENT_WRITABLE = 3n;
const HUGE = 0x80n;
/** Our tables, in RAM above the flat loader's identity map; PML4 slot 1 is linear 0x80_0000_0000. */
const PDPT = 0x30_0000;
const PD = 0x30_1000;
const PT = 0x30_2000;
const PT_REVERSED = 0x30_3000;
const LINEAR = 0x80_0000_0000n;
const CASES = 600;

/** A small deterministic generator (xorshift), so a failure can be reproduced. */
function random(seed: number): (n: number) => number {
  let x = seed >>> 0;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

test(`the page walker finds the guest-physical address KVM reports for ${CASES} writes through 2M and 4K pages`, async () => {
  const next = random(0x2f6b_9d11);
  const writes: { value: number; offset: number }[] = [];
  const vm = Vm.create({ memory: 8 * MiB });
  try {
    vm.addDebugExit();
    vm.addDevice({
      space: "mmio", base: MMIO_BASE, length: MMIO_LENGTH, sync: true,
      device: { name: "address log", read: () => 0, write: (offset: number, _size: AccessSize, value: number) => void writes.push({ value, offset }) },
    });
    const memory = vm.memory;
    // PDPT[1]: a directory; PDPT[0] and PDPT[2]: not present.
    memory.fill(PDPT, 0x4000, 0);
    memory.writeU64(PDPT + 8, BigInt(PD) | PRESENT_WRITABLE);
    // PD[0]: a 2 MiB page two MiB into the region; PD[1], PD[2]: page tables; PD[3]: a 2 MiB alias of the region's start.
    memory.writeU64(PD, BigInt(MMIO_BASE + 2 * MiB) | PRESENT_WRITABLE | HUGE);
    memory.writeU64(PD + 8, BigInt(PT) | PRESENT_WRITABLE);
    memory.writeU64(PD + 16, BigInt(PT_REVERSED) | PRESENT_WRITABLE);
    memory.writeU64(PD + 24, BigInt(MMIO_BASE) | PRESENT_WRITABLE | HUGE);
    // PT: every other 4 KiB page somewhere in the region, in no order; PT_REVERSED: the region's first 2 MiB backwards.
    for (let i = 0; i < 512; i += 2) memory.writeU64(PT + i * 8, BigInt(MMIO_BASE + next(1024) * 0x1000) | PRESENT_WRITABLE);
    for (let i = 0; i < 512; i++) memory.writeU64(PT_REVERSED + i * 8, BigInt(MMIO_BASE + (511 - i) * 0x1000) | PRESENT_WRITABLE);

    const linears: bigint[] = [];
    for (let i = 0; i < CASES; i++) {
      const aligned = (n: number) => BigInt(n - (n % 4));
      switch (i % 4) {
        case 0: linears.push(LINEAR + 0x4040_0000n + aligned(next(2 * MiB))); break; // 4 KiB pages, reversed
        case 1: linears.push(LINEAR + 0x4000_0000n + aligned(next(2 * MiB))); break; // 2 MiB page
        case 2: linears.push(LINEAR + 0x4020_0000n + BigInt(next(256) * 2 * 0x1000) + aligned(next(0x1000))); break; // 4 KiB pages
        default: linears.push(LINEAR + 0x4060_0000n + aligned(next(2 * MiB))); break; // the alias
      }
    }
    const code: number[] = [];
    linears.forEach((linear, i) => code.push(0x48, 0xb8, ...imm64(linear), 0xc7, 0x00, ...imm32(i))); // movabs rax, linear; mov dword [rax], i
    code.push(0xb8, ...imm32(0), 0xe7, 0xf4, 0xf4); // mov eax, 0; out 0xf4, eax; hlt
    const state = loadFlatProgram(memory, { code });
    const pml4 = Number(state.specialRegisters!.cr3!);
    memory.writeU64(pml4 + 8, BigInt(PDPT) | PRESENT_WRITABLE);
    vm.setCpuState(0, state);
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });

    const sregs = state.specialRegisters!;
    const paging = { cr0: sregs.cr0!, cr3: sregs.cr3!, cr4: sregs.cr4!, efer: sregs.efer! };
    assert.equal(writes.length, CASES, "every write reached the MMIO region");
    const failures: string[] = [];
    for (const { value, offset } of writes) {
      const walked = linearToPhysical(memory, paging, linears[value]);
      if (walked !== MMIO_BASE + offset) {
        failures.push(`linear 0x${linears[value].toString(16)}: KVM 0x${(MMIO_BASE + offset).toString(16)}, walker 0x${walked.toString(16)}`);
      }
    }
    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${CASES} translations differ`);

    assert.throws(() => linearToPhysical(memory, paging, LINEAR + 0x8000_0000n), (e: Error) => e instanceof PageWalkError && /not present in the PDPT/.test(e.message));
    assert.throws(() => linearToPhysical(memory, paging, LINEAR + 0x1000n), /not present in the PDPT/);
    assert.throws(() => linearToPhysical(memory, paging, 0x100_0000_0000n), /not present in the PML4/);
    assert.throws(() => linearToPhysical(memory, paging, LINEAR + 0x4020_1000n), /not present in the page table/);
    assert.throws(() => linearToPhysical(memory, { ...paging, efer: 0n }, LINEAR), /PAE paging outside long mode are not walked/);
    assert.equal(linearToPhysical(memory, { ...paging, cr0: 0x11n }, 0x1234_5678n), 0x1234_5678, "paging off: linear is physical");
  } finally {
    await vm.stop();
  }
});
