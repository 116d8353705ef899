/**
 * The QEMU peer's guest: a Multiboot (v1, a.out kludge) kernel that QEMU loads at 1 MiB.
 * Its stub copies the flat loader's low image to guest-physical 0 and enters the same
 * long-mode state workervisor gives KVM directly, then runs a chain of the very exit loops
 * the JS and C runs use (same bytes, without the park at the end), the CPL0 ones first,
 * then drops to CPL3 for the rest, and ends on isa-debug-exit.
 */
import { loadFlatProgram, DEFAULT_ENTRY } from "../runtime/boot/flat-loader.js";
import { GuestMemory } from "../memory/guest-memory.js";
import type { RunCounts } from "./figures.js";
import {
  enterUserMode, type ExitKindName, exitLoopProgram, type GuestPrivilege, longModePrologue, multibootToLongMode,
  qemuDebugExit, setParameterBlock,
} from "./guest-programs.js";
import { buildGuestImage, paramAddress } from "./guest-image.js";
import { FINISH_PORT, GUEST_MEMORY_BYTES, IMAGE_END, targetAddress } from "./layout.js";

const MULTIBOOT_MAGIC = 0x1bad_b002;
/** Flags: bit 16, the load addresses in the header are valid (no ELF needed). */
const MULTIBOOT_AOUT_KLUDGE = 1 << 16;
const LOAD_ADDRESS = 0x10_0000;
const GDTR_OFFSET = 0x20;
const STUB_OFFSET = 0x30;
const IMAGE_OFFSET = 0x1000;
const EFER_LMA = 0x400n;

/** QEMU's isa-debugcon: each marker write sends one byte to the host. */
export const QEMU_MARKER_PORT = 0xe9;
export const QEMU_DEBUG_EXIT_PORT = 0xf4;

export interface QemuProgram {
  kind: ExitKindName;
  privilege: GuestPrivilege;
  counts: RunCounts;
}

export interface QemuImage {
  file: Uint8Array;
  /** The programs in the order they run (CPL0 first). */
  order: QemuProgram[];
}

function userSelectors(): { code: number; data: number } {
  // The loader's user64 state names the CPL3 selectors; RAM content is the same as long64's.
  const scratch = GuestMemory.allocate([{ gpa: 0, size: GUEST_MEMORY_BYTES }]);
  const sregs = loadFlatProgram(scratch, { code: [0xf4], mode: "user64" }).specialRegisters!;
  return { code: sregs.cs!.selector, data: sregs.ss!.selector };
}

export function buildQemuImage(programs: readonly QemuProgram[]): QemuImage {
  const order = [...programs.filter((p) => p.privilege === "cpl0"), ...programs.filter((p) => p.privilege === "cpl3")];
  const params = order.map((p) => ({
    markerPort: QEMU_MARKER_PORT,
    target: targetAddress(p.kind, 0),
    warmupBatches: p.counts.warmupBatches,
    calibrationRounds: p.counts.calibrationRounds,
    measuredBatches: p.counts.measuredBatches,
    finishPort: FINISH_PORT,
  }));
  // Selectors and the TSS location come from the loader's state, so the two cannot drift.
  const probe = buildGuestImage([0xf4], "long64", []).cpuState;
  const sregs = probe.specialRegisters!;
  const user = userSelectors();
  const stack = Number(probe.registers!.rsp!);
  const code: number[] = [...longModePrologue(sregs.ds!.selector, stack)];
  order.forEach((p, i) => {
    if (p.privilege === "cpl3" && (i === 0 || order[i - 1].privilege === "cpl0")) {
      code.push(...enterUserMode({
        tssAccessByte: Number(sregs.gdt!.base) + sregs.tr!.selector + 5,
        tssSelector: sregs.tr!.selector,
        userCode: user.code,
        userData: user.data,
        userStack: stack,
      }));
    }
    code.push(...setParameterBlock(paramAddress(i)), ...exitLoopProgram(p.kind, p.counts.opsPerBatch, p.privilege, "fall-through"));
  });
  code.push(...qemuDebugExit(QEMU_DEBUG_EXIT_PORT));

  const image = buildGuestImage(code, "long64", params);
  const state = image.cpuState.specialRegisters!;
  const file = new Uint8Array(IMAGE_OFFSET + IMAGE_END);
  const view = new DataView(file.buffer);
  const header = [
    MULTIBOOT_MAGIC,
    MULTIBOOT_AOUT_KLUDGE,
    (-(MULTIBOOT_MAGIC + MULTIBOOT_AOUT_KLUDGE)) >>> 0,
    LOAD_ADDRESS, // header_addr: the header is the first thing loaded
    LOAD_ADDRESS, // load_addr
    LOAD_ADDRESS + file.length, // load_end_addr
    0, // bss_end_addr: none
    LOAD_ADDRESS + STUB_OFFSET, // entry_addr
  ];
  header.forEach((value, i) => view.setUint32(i * 4, value, true));
  view.setUint16(GDTR_OFFSET, state.gdt!.limit, true);
  view.setUint32(GDTR_OFFSET + 2, Number(state.gdt!.base), true);
  file.set(multibootToLongMode({
    imageSource: LOAD_ADDRESS + IMAGE_OFFSET,
    imageBytes: IMAGE_END,
    gdtr: LOAD_ADDRESS + GDTR_OFFSET,
    cr0: Number(state.cr0!),
    cr3: Number(state.cr3!),
    cr4: Number(state.cr4!),
    efer: Number(state.efer! & ~EFER_LMA),
    codeSelector: state.cs!.selector,
    entry: DEFAULT_ENTRY,
  }), STUB_OFFSET);
  file.set(image.bytes, IMAGE_OFFSET);
  return { file, order };
}
