/**
 * The MSHV backend's ABI tables against the C compiler: test/fixtures/mshv-layout.c, built
 * with cc against copies of the kernel and Microsoft headers, prints every size, offset,
 * ioctl number and constant the TypeScript codecs use, and hv_message images of intercept
 * scenarios filled through the headers' field names; those images must decode to the
 * expected neutral exits and complete into the expected registers.
 * (No /dev/mshv on this host: what this cannot prove is listed in the README.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { ExitKind, exitKindName, type Exit } from "../runtime/hypervisor/hypervisor.js";
import {
  HV_PAGE_SIZE, INTERCEPT_ACCESS_MASK_EXECUTE, INTERCEPT_TYPE_X64_CPUID, InterceptAccess, IoAccessInfo, IoEventFlag, Ioctl,
  MemoryFlag, MessageType, MSHV_IOCTL, MsrRegisterName, Offset, PartitionFlag, PendingInterruption, RegisterClass, RegisterName,
  SegmentAttribute, Size, SpecialRegisterName, VP_MMAP_OFFSET_REGISTERS,
} from "../runtime/hypervisor/mshv/mshv-abi.js";
import {
  answerCpuid, completeIntercept, Decoded, InterceptDecoder, newPendingCompletion, RegisterPage, takeFollowUp,
} from "../runtime/hypervisor/mshv/mshv-intercepts.js";
import { readSegment, readTable, writeSegment, writeTable } from "../runtime/hypervisor/mshv/mshv-registers.js";
import { encodeGetVpRegisters, encodeInstallIntercept, encodeSetVpRegisters } from "../runtime/hypervisor/mshv/mshv-hvcall.js";
import {
  encodeCreatePartition, encodeCreateVp, encodeIoEvent, encodeIrqFd, encodeMemoryRegion,
} from "../runtime/hypervisor/mshv/mshv-partition.js";
import { buildHostProgram, PROJECT_ROOT } from "./helpers/host-program.js";
import { GuestMemory } from "../memory/guest-memory.js";

interface Layout {
  ioctls: Record<string, number>;
  sizes: Record<string, number>;
  offsets: Record<string, number>;
  bitfields: Record<string, number>;
  registers: Record<string, number>;
  constants: Record<string, number>;
  images: Record<string, string>;
  scenarios: Record<string, { message: string; registers: string }>;
}

const FIXTURES = join(PROJECT_ROOT, "test", "fixtures");
let cached: Layout | undefined;

function layout(): Layout {
  if (cached) return cached;
  const program = buildHostProgram("mshv-layout", [join(FIXTURES, "mshv-layout.c")], [
    join(FIXTURES, "mshv-headers", "uapi"), join(FIXTURES, "mshv-headers"),
  ]);
  const run = spawnSync(program, { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  cached = JSON.parse(run.stdout) as Layout;
  return cached;
}

test("every /dev/mshv ioctl number is the one include/uapi/linux/mshv.h defines", () => {
  const c = layout().ioctls;
  assert.equal(MSHV_IOCTL, c.MSHV_IOCTL);
  const names = Object.keys(Ioctl) as (keyof typeof Ioctl)[];
  assert.deepEqual(
    Object.fromEntries(names.map((name) => [name, Ioctl[name]])),
    Object.fromEntries(names.map((name) => [name, c[`MSHV_${name}`]])),
  );
  assert.equal(Object.keys(c).length, names.length + 1, "the C program prints an ioctl the TS table lacks");
});

test("every struct size the codecs use matches the headers", () => {
  assert.deepEqual({ ...Size }, layout().sizes);
});

test("every field offset the codecs use matches the headers", () => {
  const c = layout();
  const bitfieldOffsets = new Set(["hv_x64_intercept_message_header.instruction_length"]);
  let checked = 0;
  for (const [struct, fields] of Object.entries(Offset)) {
    for (const [field, offset] of Object.entries(fields)) {
      const key = `${struct}.${field}`;
      const expected = bitfieldOffsets.has(key) ? c.bitfields[`${key}.byte`] : c.offsets[key];
      assert.equal(offset, expected, `${key}: TS says ${offset}, C says ${expected}`);
      checked++;
    }
  }
  assert.equal(checked, Object.keys(c.offsets).length + bitfieldOffsets.size, "the C program prints an offset the TS table lacks");
});

test("bit fields, flags and message types match the headers", () => {
  const { bitfields: b, constants: k } = layout();
  assert.equal(b["hv_x64_intercept_message_header.instruction_length.mask"], 0x0f);
  assert.equal(IoAccessInfo.SIZE_MASK, b["hv_x64_io_port_access_info.access_size.mask"]);
  assert.equal(IoAccessInfo.STRING_OP, b["hv_x64_io_port_access_info.string_op.mask"]);
  assert.equal(IoAccessInfo.REP_PREFIX, b["hv_x64_io_port_access_info.rep_prefix.mask"]);
  // Segment attributes are a u16 at offset 14: bit n is bit n-8 of byte 15.
  for (const [bit, name] of [[SegmentAttribute.LONG, "_long"], [SegmentAttribute.DEFAULT_BIG, "_default"]] as const) {
    assert.equal(b[`hv_x64_segment_register.${name}.byte`], Offset.hv_x64_segment_register.attributes + 1);
    assert.equal(bit >> 8, b[`hv_x64_segment_register.${name}.mask`]);
  }
  assert.equal(PartitionFlag.LAPIC, 1n << BigInt(k.MSHV_PT_BIT_LAPIC));
  assert.equal(PartitionFlag.X2APIC, 1n << BigInt(k.MSHV_PT_BIT_X2APIC));
  assert.equal(PartitionFlag.GPA_SUPER_PAGES, 1n << BigInt(k.MSHV_PT_BIT_GPA_SUPER_PAGES));
  assert.equal(MemoryFlag.WRITABLE, 1 << k.MSHV_SET_MEM_BIT_WRITABLE);
  assert.equal(MemoryFlag.EXECUTABLE, 1 << k.MSHV_SET_MEM_BIT_EXECUTABLE);
  assert.equal(MemoryFlag.UNMAP, 1 << k.MSHV_SET_MEM_BIT_UNMAP);
  assert.equal(IoEventFlag.DATAMATCH, 1 << k.MSHV_IOEVENTFD_BIT_DATAMATCH);
  assert.equal(IoEventFlag.PIO, 1 << k.MSHV_IOEVENTFD_BIT_PIO);
  assert.equal(IoEventFlag.DEASSIGN, 1 << k.MSHV_IOEVENTFD_BIT_DEASSIGN);
  assert.equal(VP_MMAP_OFFSET_REGISTERS, k.MSHV_VP_MMAP_OFFSET_REGISTERS);
  assert.equal(HV_PAGE_SIZE, k.MSHV_HV_PAGE_SIZE);
  for (const [name, value] of Object.entries(MessageType)) assert.equal(value, k[`HVMSG_${name}`], `HVMSG_${name}`);
  for (const [name, value] of Object.entries(RegisterClass)) assert.equal(value, k[`HV_X64_REGISTER_CLASS_${name}`], name);
  assert.equal(INTERCEPT_TYPE_X64_CPUID, k.HV_INTERCEPT_TYPE_X64_CPUID);
  assert.equal(INTERCEPT_ACCESS_MASK_EXECUTE, k.HV_INTERCEPT_ACCESS_MASK_EXECUTE);
  const pending = (field: string) => BigInt(b[`hv_x64_pending_interruption_register.${field}`]);
  assert.equal(PendingInterruption.PENDING, pending("interruption_pending"));
  assert.equal(pending("interruption_type"), 7n << 1n, "the type field is bits 1-3");
  assert.equal(PendingInterruption.TYPE_EXCEPTION, 3n << 1n, "HV_X64_PENDING_EXCEPTION (3) in the type field");
  assert.equal(PendingInterruption.DELIVER_ERROR_CODE, pending("deliver_error_code"));
  assert.equal(0xffffn << PendingInterruption.VECTOR_SHIFT, pending("interruption_vector"));
});

test("every hypervisor register name the backend uses is the header's", () => {
  const c = layout().registers;
  const header = (name: string) => `HV_X64_REGISTER_${name.toUpperCase()}`;
  const aliases: Record<string, string> = { ldt: "LDTR", idt: "IDTR", gdt: "GDTR", apicBase: "APIC_BASE" };
  const checked: Record<string, number> = {};
  for (const [name, value] of Object.entries(RegisterName)) checked[header(name)] = value;
  for (const [name, value] of Object.entries(SpecialRegisterName)) checked[`HV_X64_REGISTER_${aliases[name] ?? name.toUpperCase()}`] = value;
  for (const [name, value] of Object.entries(MsrRegisterName)) checked[header(name)] = value;
  assert.deepEqual(checked, Object.fromEntries(Object.keys(checked).map((name) => [name, c[name]])));
  assert.equal(Object.keys(checked).length, Object.keys(c).length, "the C program prints a register the TS tables lack");
});

test("segment and table registers convert to and from the neutral records bit for bit", () => {
  const { images } = layout();
  const segmentBytes = bytesOf(images.segment);
  const segment = readSegment(new DataView(segmentBytes.buffer), 0);
  assert.deepEqual(segment, {
    base: 0x1234_5678_9abc_def0n, limit: 0xfffff, selector: 0x2b, type: 0xb, s: 1, dpl: 3, present: 1,
    avl: 1, l: 1, db: 0, g: 1, unusable: 0,
  });
  const written = new Uint8Array(16);
  writeSegment(new DataView(written.buffer), 0, segment);
  assert.deepEqual(written, segmentBytes);

  const tableBytes = bytesOf(images.table);
  const table = readTable(new DataView(tableBytes.buffer), 0);
  assert.deepEqual(table, { limit: 0x37, base: 0xfedc_ba98_7654_3210n });
  const writtenTable = new Uint8Array(16);
  writeTable(new DataView(writtenTable.buffer), 0, table);
  assert.deepEqual(writtenTable, tableBytes);
});

test("hypercall inputs (get/set VP registers, install intercept) are laid out as the headers lay them out", () => {
  const { images } = layout();
  const encode = (build: (view: DataView) => number) => {
    const page = new Uint8Array(4096).fill(0xee); // stale bytes from an earlier call must not leak in
    const size = build(new DataView(page.buffer));
    return page.subarray(0, size);
  };
  assert.deepEqual(
    encode((v) => encodeGetVpRegisters(v, 3, [RegisterName.rip, SpecialRegisterName.cs])),
    bytesOf(images.get_vp_registers),
  );
  const segment = readSegment(new DataView(bytesOf(images.segment).buffer), 0);
  assert.deepEqual(
    encode((v) => encodeSetVpRegisters(v, 3, [RegisterName.rip, SpecialRegisterName.cs], (value, i) => {
      if (i === 0) value.setBigUint64(0, 0x1000n, true);
      else writeSegment(value, 0, segment);
    })),
    bytesOf(images.set_vp_registers),
  );
  assert.deepEqual(
    encode((v) => encodeInstallIntercept(v, INTERCEPT_ACCESS_MASK_EXECUTE, INTERCEPT_TYPE_X64_CPUID, 0n)),
    bytesOf(images.install_intercept_cpuid),
  );
});

test("ioctl arguments (partition, memory, eventfds, VP) are laid out as include/uapi/linux/mshv.h lays them out", () => {
  const { images } = layout();
  assert.deepEqual(encodeCreatePartition(), bytesOf(images.create_partition));
  assert.deepEqual(encodeMemoryRegion(0x10_0000, 0x20_0000, 0x7f00_0000_0000n, false), bytesOf(images.map_region));
  assert.deepEqual(encodeMemoryRegion(0x10_0000, 0x20_0000, 0x7f00_0000_0000n, true), bytesOf(images.unmap_region));
  assert.deepEqual(encodeIoEvent({ space: "pio", address: 0x3f8, size: 1, value: 0x1234 }, 42), bytesOf(images.ioeventfd_pio_match));
  assert.deepEqual(encodeIoEvent({ space: "mmio", address: 0xd000_0000, size: 4 }, 43), bytesOf(images.ioeventfd_mmio_any));
  assert.deepEqual(encodeIrqFd(44, 5), bytesOf(images.irqfd));
  assert.deepEqual(encodeCreateVp(7), bytesOf(images.create_vp));
});

// ---- hv_message images -> neutral exits ----

function bytesOf(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, "hex"));
}

interface Decode {
  decoded: Decoded;
  exit: Exit;
  registers: RegisterPage;
  pending: ReturnType<typeof newPendingCompletion>;
}

/**
 * `csAttributes` replaces the intercepted code segment's attributes (the scenarios are 64-bit
 * code); `edit` changes the message or registers first; `memory` is guest RAM for string I/O.
 */
function decode(
  name: string, csAttributes?: number, memory?: GuestMemory, edit?: (message: DataView, registers: RegisterPage) => void,
): Decode {
  const scenario = layout().scenarios[name];
  assert.ok(scenario, `the C program has no scenario '${name}'`);
  const message = new DataView(bytesOf(scenario.message).buffer);
  if (csAttributes !== undefined) {
    const at = Offset.hv_message.payload + Offset.hv_x64_intercept_message_header.cs_segment + Offset.hv_x64_segment_register.attributes;
    message.setUint16(at, csAttributes, true);
  }
  const registers = new RegisterPage(new DataView(bytesOf(scenario.registers).buffer));
  edit?.(message, registers);
  const exit: Exit = { kind: ExitKind.Unknown, address: 0, size: 0, count: 0, data: 0, dataHigh: 0, detail: "" };
  const pending = newPendingCompletion();
  const decoded = new InterceptDecoder(message, registers, memory).decode(exit, pending);
  return { decoded, exit, registers, pending };
}

function summary(exit: Exit) {
  return { kind: exitKindName(exit.kind), address: exit.address, size: exit.size, data: exit.data, dataHigh: exit.dataHigh };
}

function expectFatal(name: string, kind: ExitKind, detail: RegExp): void {
  const { exit } = decode(name);
  assert.equal(exitKindName(exit.kind), exitKindName(kind), name);
  assert.match(exit.detail, detail, name);
}

test("port I/O intercepts become io-in/io-out, and the backend advances RIP and merges RAX", () => {
  const out = decode("io-out-byte");
  assert.equal(out.decoded, Decoded.EXIT);
  assert.deepEqual(summary(out.exit), { kind: "io-out", address: 0x3f8, size: 1, data: 0x41, dataHigh: 0 });
  completeIntercept(out.pending, out.registers, 0, 0);
  assert.equal(out.registers.rip, 0x100001n, "RIP steps over the 1-byte OUT");
  assert.equal(out.registers.dirty, 1 << RegisterClass.IP, "only RIP is written back");

  const word = decode("io-in-word");
  assert.deepEqual(summary(word.exit), { kind: "io-in", address: 0x71, size: 2, data: 0, dataHigh: 0 });
  completeIntercept(word.pending, word.registers, 0x1234, 0);
  assert.equal(word.registers.gpr(0), 0xffff_ffff_aaaa_1234n, "IN AX replaces AX only");
  assert.equal(word.registers.rip, 0x100002n);
  assert.equal(word.registers.dirty, (1 << RegisterClass.GENERAL) | (1 << RegisterClass.IP));

  const dword = decode("io-in-dword");
  completeIntercept(dword.pending, dword.registers, 0x1122_3344, 0);
  assert.equal(dword.registers.gpr(0), 0x1122_3344n, "IN EAX zero-extends into RAX");

  expectFatal("io-rep-outsb", ExitKind.InternalError, /string I\/O on port 0x3f8 at rip 0x100000: no guest memory/);
  expectFatal("io-bad-size", ExitKind.InternalError, /access size 3/);
  expectFatal("io-truncated", ExitKind.InternalError, /malformed I\/O port intercept: payload_size 40/);
});

test("GPA intercepts go through the x86 emulator: width, data, register and RIP", () => {
  const cases: [string, ReturnType<typeof summary>, bigint][] = [
    ["mmio-store-ecx", { kind: "mmio-write", address: 0xd000_0000, size: 4, data: 0xcafe_babe, dataHigh: 0 }, 2n],
    ["mmio-store-imm32", { kind: "mmio-write", address: 0xd000_0030, size: 4, data: 0x8765_4321, dataHigh: 0 }, 11n],
    ["mmio-store-cx", { kind: "mmio-write", address: 0xd000_0040, size: 2, data: 0xbabe, dataHigh: 0 }, 3n],
    ["mmio-store-r8d", { kind: "mmio-write", address: 0xd000_0050, size: 4, data: 0x8765_4321, dataHigh: 0 }, 3n],
  ];
  for (const [name, expected, length] of cases) {
    const store = decode(name);
    assert.deepEqual(summary(store.exit), expected, name);
    completeIntercept(store.pending, store.registers, 0, 0);
    assert.equal(store.registers.rip, 0x200000n + length, `${name}: RIP advances by the decoded length`);
  }

  const load = decode("mmio-load-rbx");
  assert.deepEqual(summary(load.exit), { kind: "mmio-read", address: 0xd000_0008, size: 8, data: 0, dataHigh: 0 });
  completeIntercept(load.pending, load.registers, 0x89ab_cdef, 0x0123_4567);
  assert.equal(load.registers.gpr(3), 0x0123_4567_89ab_cdefn);
  assert.equal(load.registers.rip, 0x200003n);

  const movzx = decode("mmio-movzx-eax");
  assert.equal(movzx.exit.size, 1);
  completeIntercept(movzx.pending, movzx.registers, 0xfe, 0);
  assert.equal(movzx.registers.gpr(0), 0xfen, "MOVZX to EAX clears bits 8-63");

  const movsx = decode("mmio-movsx-rdx");
  assert.equal(movsx.exit.size, 2);
  completeIntercept(movsx.pending, movsx.registers, 0x8001, 0);
  assert.equal(movsx.registers.gpr(2), 0xffff_ffff_ffff_8001n, "MOVSX to RDX sign-extends");
  assert.equal(movsx.registers.rip, 0x200005n);

  const high = decode("mmio-load-ch");
  assert.deepEqual(summary(high.exit), { kind: "mmio-read", address: 0xd000_0060, size: 1, data: 0, dataHigh: 0 });
  completeIntercept(high.pending, high.registers, 0x5a, 0);
  assert.equal(high.registers.gpr(1), 0x2222_2222_cafe_5aben, "MOV CH writes bits 8-15 of RCX only");

  expectFatal("mmio-execute", ExitKind.InternalError, /executes from GPA 0xd0000080/);
});

test("a GPA intercept decodes its instruction in the code size CS gives: 64-, 32- or 16-bit", () => {
  const PRESENT_CODE = 0x9b; // type 0xb (code, read, accessed), S, P
  // 48 8b 1e: mov (%rsi),%rbx in 64-bit code; in 32-bit code 48 is DEC EAX, which touches no memory.
  const long = decode("mmio-load-rbx");
  assert.equal(long.exit.size, 8);
  expectFatalOf(decode("mmio-load-rbx", PRESENT_CODE | SegmentAttribute.DEFAULT_BIG), /opcode 0x48 is not an MMIO instruction.*48 8b 1e/);
  // 89 08: mov %ecx,(%rax) in 32-bit code; mov %cx,(%bx,%si) in 16-bit code.
  const protectedMode = decode("mmio-store-ecx", PRESENT_CODE | SegmentAttribute.DEFAULT_BIG);
  assert.deepEqual(summary(protectedMode.exit), { kind: "mmio-write", address: 0xd000_0000, size: 4, data: 0xcafe_babe, dataHigh: 0 });
  const real = decode("mmio-store-ecx", PRESENT_CODE);
  assert.deepEqual(summary(real.exit), { kind: "mmio-write", address: 0xd000_0000, size: 2, data: 0xbabe, dataHigh: 0 });
  completeIntercept(real.pending, real.registers, 0, 0);
  assert.equal(real.registers.rip, 0x200002n);
});

function expectFatalOf({ exit }: Decode, detail: RegExp): void {
  assert.equal(exitKindName(exit.kind), "internal-error");
  assert.match(exit.detail, detail);
}

test("a read-modify-write GPA intercept is a read exit, then a write exit, then the registers and RIP", () => {
  // add %ecx,(%rax): ECX is 0xcafebabe in the scenario's registers.
  const add = decode("mmio-add");
  assert.deepEqual(summary(add.exit), { kind: "mmio-read", address: 0xd000_0070, size: 4, data: 0, dataHigh: 0 });
  completeIntercept(add.pending, add.registers, 0x3501_4546, 0);
  assert.equal(add.registers.rip, 0x200000n, "RIP stays until the instruction's last access completes");
  assert.equal(takeFollowUp(add.exit, add.pending), true, "the write follows without entering the guest");
  assert.deepEqual(summary(add.exit), { kind: "mmio-write", address: 0xd000_0070, size: 4, data: 0x0000_0004, dataHigh: 0 });
  completeIntercept(add.pending, add.registers, 0, 0);
  assert.equal(takeFollowUp(add.exit, add.pending), false);
  assert.equal(add.registers.rip, 0x200002n);
  // 0x35014546 + 0xcafebabe = 0x1_00000004 carries out of bit 31 and out of bit 3: CF and AF; the result 4 has one bit set: PF clear.
  const CF = 1n, PF = 4n, AF = 0x10n, ZF = 0x40n, SF = 0x80n, OF = 0x800n;
  assert.equal(add.registers.rflags & (CF | PF | AF | ZF | SF | OF), CF | AF);
  assert.equal(add.registers.dirty & (1 << RegisterClass.FLAGS), 1 << RegisterClass.FLAGS, "the flags are written back");
  assert.equal(add.registers.dirty & (1 << RegisterClass.GENERAL), 0, "no general register changed");
});

test("REP OUTSB/INSB move bytes through guest RAM, a page at a time, stepping RSI/RDI and RCX", () => {
  // The scenario: rep outsb to 0x3f8, RCX 3, RSI 0, paging off (CR0 0 in the register page).
  const memory = GuestMemory.allocate([{ gpa: 0, size: 0x3000 }]);
  memory.write(0, [0x61, 0x62, 0x63]);
  const out = decode("io-rep-outsb", undefined, memory);
  assert.deepEqual({ ...summary(out.exit), count: out.exit.count }, { kind: "io-out", address: 0x3f8, size: 1, data: 0, dataHigh: 0, count: 3 });
  assert.deepEqual([...out.pending.stringData!], [0x61, 0x62, 0x63], "stringData is the guest's bytes");
  completeIntercept(out.pending, out.registers, 0, 0);
  assert.deepEqual([out.registers.gpr(6), out.registers.gpr(1), out.registers.rip], [3n, 0n, 0x100002n], "RSI +3, RCX 0, RIP past the 2-byte instruction");

  // The same as INSB (a read intercept), RDI 0x1ffe: two bytes fit before the page ends.
  const ACCESS = Offset.hv_message.payload + Offset.hv_x64_intercept_message_header.intercept_access_type;
  const into = decode("io-rep-outsb", undefined, memory, (message, registers) => {
    message.setUint8(ACCESS, InterceptAccess.READ);
    registers.setGpr(7, 0x1ffen);
  });
  assert.deepEqual({ kind: exitKindName(into.exit.kind), count: into.exit.count }, { kind: "io-in", count: 2 });
  into.pending.stringData!.set([0x78, 0x79]);
  completeIntercept(into.pending, into.registers, 0, 0);
  assert.deepEqual([...memory.read(0x1ffe, 2)], [0x78, 0x79], "the bytes went to guest RAM at RDI");
  assert.deepEqual([into.registers.gpr(7), into.registers.gpr(1), into.registers.rip], [0x2000n, 1n, 0x100000n],
    "RDI +2, RCX 1 left: RIP stays for the guest to execute the rest");

  // Through the guest's page tables: 4-level paging maps linear 0x1000 to guest-physical 0x2000.
  memory.fill(0, 0x3000, 0);
  const PRESENT_WRITABLE = 3n;
  memory.writeU64(0x0000, 0x1000n | PRESENT_WRITABLE); // PML4 -> PDPT
  memory.writeU64(0x1000, 0x1000n | PRESENT_WRITABLE); // PDPT -> PD (the same page, entry 0)
  memory.writeU64(0x1000 + 0, 0x1000n | PRESENT_WRITABLE); // PD -> PT (again entry 0 of that page)
  memory.writeU64(0x1008, 0x2000n | PRESENT_WRITABLE); // PT entry 1: linear 0x1000 -> 0x2000
  memory.write(0x2000, [0x51, 0x52, 0x53]);
  const pagedFrom = (rsi: bigint) => (_message: DataView, registers: RegisterPage) => {
    const PAGE = Offset.hv_vp_register_page;
    registers.view.setBigUint64(PAGE.cr0, 0x8000_0011n, true); // PG, ET, PE
    registers.view.setBigUint64(PAGE.cr3, 0n, true);
    registers.view.setBigUint64(PAGE.cr4, 0x20n, true); // PAE
    registers.view.setBigUint64(PAGE.efer, 0x500n, true); // LME, LMA
    registers.setGpr(6, rsi);
  };
  const paged = decode("io-rep-outsb", undefined, memory, pagedFrom(0x1000n));
  assert.deepEqual([...paged.pending.stringData!], [0x51, 0x52, 0x53]);
  assert.match(decode("io-rep-outsb", undefined, memory, pagedFrom(0x40_0000n)).exit.detail, /linear 0x400000: not present in the page directory/);
  // One element left (RCX 1): a plain access, its value in `data`; an INSB's answer comes through completeRead.
  memory.write(0x10, [0xa5]);
  const single = decode("io-rep-outsb", undefined, memory, (_message, registers) => {
    registers.setGpr(1, 1n);
    registers.setGpr(6, 0x10n);
  });
  assert.deepEqual({ count: single.exit.count, data: single.exit.data }, { count: 1, data: 0xa5 });
  const singleIn = decode("io-rep-outsb", undefined, memory, (message, registers) => {
    message.setUint8(ACCESS, InterceptAccess.READ);
    registers.setGpr(1, 1n);
    registers.setGpr(7, 0x20n);
  });
  completeIntercept(singleIn.pending, singleIn.registers, 0x5c, 0);
  assert.equal(memory.readU8(0x20), 0x5c);
  assert.deepEqual([singleIn.registers.gpr(7), singleIn.registers.gpr(1), singleIn.registers.rip], [0x21n, 0n, 0x100002n]);

  const unbacked = decode("io-rep-outsb", undefined, memory, (_message, registers) => registers.setGpr(6, 0x40_0000n));
  assert.match(unbacked.exit.detail, /guest-physical 0x400000 \(\+3 bytes\) is not RAM/);
});

test("MSR intercepts become msr-read/msr-write; a read completes into EDX:EAX", () => {
  const read = decode("msr-read");
  assert.deepEqual(summary(read.exit), { kind: "msr-read", address: 0xc000_0080, size: 8, data: 0, dataHigh: 0 });
  completeIntercept(read.pending, read.registers, 0x0000_0d01, 0x1);
  assert.equal(read.registers.gpr(0), 0xd01n);
  assert.equal(read.registers.gpr(2), 0x1n);
  assert.equal(read.registers.rip, 0x300002n);

  const write = decode("msr-write");
  assert.deepEqual(summary(write.exit), { kind: "msr-write", address: 0x4b56_4d01, size: 8, data: 0x9abc_def1, dataHigh: 0x1234_5678 });
});

test("a CPUID intercept is answered by the backend from the vCPU's table, else with the hypervisor's defaults", () => {
  const ours = decode("cpuid");
  assert.equal(ours.decoded, Decoded.CPUID);
  answerCpuid(ours.pending, [{ function: 0x4000_0000, index: 0, flags: 0, eax: 0x4000_0010, ebx: 1, ecx: 2, edx: 3 }], ours.registers);
  assert.deepEqual([0, 3, 1, 2].map((r) => ours.registers.gpr(r)), [0x4000_0010n, 1n, 2n, 3n]);
  assert.equal(ours.registers.rip, 0x400002n);

  const theirs = decode("cpuid");
  answerCpuid(theirs.pending, [], theirs.registers);
  assert.equal(theirs.registers.gpr(0), 0x4000_0006n);
  const text = Buffer.alloc(12);
  [3, 1, 2].forEach((register, i) => text.writeUInt32LE(Number(theirs.registers.gpr(register)), 4 * i)); // EBX, ECX, EDX
  assert.equal(text.toString("latin1"), "Microsoft Hv");
});

test("halt, unrecoverable exceptions, intercepted exceptions and unknown messages", () => {
  assert.equal(exitKindName(decode("halt").exit.kind), "hlt");
  expectFatal("unrecoverable-exception", ExitKind.Shutdown, /unrecoverable exception \(triple fault\) at rip 0x600000/);
  expectFatal("exception-ud", ExitKind.InternalError, /intercepted exception 6 .* at rip 0x700000/);
  expectFatal("timer-expired", ExitKind.Unknown, /hv_message type 0x80000010/);
  assert.equal(InterceptAccess.WRITE, 1);
});
