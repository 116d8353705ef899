import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import {
  KernelFormatError,
  MULTIBOOT_BOOTLOADER_MAGIC,
  detectKernelFormat,
  loadMultiboot,
} from "../runtime/boot/multiboot.js";
import { GuestMemory } from "../memory/guest-memory.js";

// dist/test/ is two levels below the project root; shared/ sits beside it.
const DUMMY = new URL("../../../shared/kvm-unit-tests/dummy.flat", import.meta.url);
const MiB = 1024 * 1024;

function readDummy(t: TestContext): Uint8Array | undefined {
  if (existsSync(DUMMY)) return new Uint8Array(readFileSync(DUMMY));
  const message =
    `${fileURLToPath(DUMMY)} is missing: build kvm-unit-tests for x86-64 (./configure && make, see ` +
    "shared/kvm-unit-tests/README.md for the commit) and copy x86/dummy.flat there";
  if (process.env.CI) assert.fail(message);
  t.skip(message);
  return undefined;
}

// Multiboot information structure offsets, from the spec (section 3.3), kept separate
// from the loader's own table so the test checks the loader against the spec.
const INFO = {
  flags: 0,
  mem_lower: 4,
  mem_upper: 8,
  cmdline: 16,
  mods_count: 20,
  mods_addr: 24,
  mmap_length: 44,
  mmap_addr: 48,
  boot_loader_name: 64,
};

function readCString(memory: GuestMemory, gpa: number): string {
  const bytes: number[] = [];
  for (let b = memory.readU8(gpa); b !== 0; b = memory.readU8(++gpa)) bytes.push(b);
  return new TextDecoder().decode(new Uint8Array(bytes));
}

interface DecodedModule {
  start: number;
  end: number;
  name: string;
  data: Uint8Array;
}

function readModules(memory: GuestMemory, info: number): DecodedModule[] {
  const count = memory.readU32(info + INFO.mods_count);
  const list = memory.readU32(info + INFO.mods_addr);
  return Array.from({ length: count }, (_, i) => {
    const at = list + 16 * i;
    const start = memory.readU32(at);
    const end = memory.readU32(at + 4);
    assert.equal(memory.readU32(at + 12), 0, "module reserved field");
    return { start, end, name: readCString(memory, memory.readU32(at + 8)), data: memory.read(start, end - start) };
  });
}

function readMmap(memory: GuestMemory, info: number): { base: number; length: number; type: number }[] {
  const length = memory.readU32(info + INFO.mmap_length);
  const entries = [];
  // Walk it as a kernel does: each entry's size field counts the bytes after itself.
  for (let at = memory.readU32(info + INFO.mmap_addr), end = at + length; at < end; at += memory.readU32(at) + 4) {
    assert.equal(memory.readU32(at), 20, "mmap entry size");
    entries.push({
      base: Number(memory.readU64(at + 4)),
      length: Number(memory.readU64(at + 12)),
      type: memory.readU32(at + 20),
    });
  }
  return entries;
}

/** The PC map every test guest starting at 0 should see (the same as Linux's e820 map). */
function expectedMmap(ramEnd: number): { base: number; length: number; type: number }[] {
  return [
    { base: 0, length: 0x9fc00, type: 1 },
    { base: 0x9fc00, length: 0x400, type: 2 },
    { base: 0xe0000, length: 0x20000, type: 2 }, // the BIOS area: RSDP, ACPI and MP tables
    { base: 0x100000, length: ramEnd - 0x100000, type: 1 },
  ];
}

interface ElfSegment {
  type?: number;
  offset: number;
  vaddr: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

function programHeaders(image: Uint8Array): { entry: number; segments: ElfSegment[] } {
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const phoff = v.getUint32(28, true);
  const phentsize = v.getUint16(42, true);
  const segments = Array.from({ length: v.getUint16(44, true) }, (_, i) => {
    const ph = phoff + i * phentsize;
    return {
      type: v.getUint32(ph, true),
      offset: v.getUint32(ph + 4, true),
      vaddr: v.getUint32(ph + 8, true),
      paddr: v.getUint32(ph + 12, true),
      filesz: v.getUint32(ph + 16, true),
      memsz: v.getUint32(ph + 20, true),
    };
  });
  return { entry: v.getUint32(24, true), segments: segments.filter((s) => s.type === 1) };
}

interface CraftSegment {
  vaddr?: number;
  paddr: number;
  data: Uint8Array;
  memsz?: number;
}

/** A minimal little-endian ELF32 x86 executable with a multiboot header after its phdrs. */
function craftElf32(opts: {
  entry: number;
  segments: CraftSegment[];
  mbFlags?: number;
  checksumDelta?: number;
  machine?: number;
  elfClass?: number;
}): Uint8Array {
  const phoff = 52;
  const mbOffset = phoff + 32 * opts.segments.length;
  let dataOffset = mbOffset + 12;
  const offsets = opts.segments.map((s) => {
    dataOffset = Math.ceil(dataOffset / 16) * 16;
    const at = dataOffset;
    dataOffset += s.data.length;
    return at;
  });
  const image = new Uint8Array(dataOffset);
  const v = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, opts.elfClass ?? 1, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, opts.machine ?? 3, true);
  v.setUint32(20, 1, true);
  v.setUint32(24, opts.entry, true);
  v.setUint32(28, phoff, true);
  v.setUint16(40, 52, true);
  v.setUint16(42, 32, true);
  v.setUint16(44, opts.segments.length, true);
  opts.segments.forEach((s, i) => {
    const ph = phoff + 32 * i;
    v.setUint32(ph, 1, true); // PT_LOAD
    v.setUint32(ph + 4, offsets[i], true);
    v.setUint32(ph + 8, s.vaddr ?? s.paddr, true);
    v.setUint32(ph + 12, s.paddr, true);
    v.setUint32(ph + 16, s.data.length, true);
    v.setUint32(ph + 20, s.memsz ?? s.data.length, true);
    image.set(s.data, offsets[i]);
  });
  const flags = opts.mbFlags ?? 0;
  v.setUint32(mbOffset, 0x1badb002, true);
  v.setUint32(mbOffset + 4, flags, true);
  v.setUint32(mbOffset + 8, (-(0x1badb002 + flags) + (opts.checksumDelta ?? 0)) >>> 0, true);
  return image;
}

function bytes(length: number, seed: number): Uint8Array {
  // xorshift32: deterministic "random" content.
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const ram = (size: number): GuestMemory => GuestMemory.allocate([{ gpa: 0, size }]);

function throwsFormat(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KernelFormatError, `expected KernelFormatError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

test("dummy.flat is detected as a multiboot ELF32 kernel", (t) => {
  const image = readDummy(t);
  if (!image) return;
  const detected = detectKernelFormat(image);
  assert.equal(detected.format, "multiboot-elf32");
});

test("dummy.flat loads: segments, bss, entry and the multiboot information", (t) => {
  const image = readDummy(t);
  if (!image) return;
  const memory = ram(128 * MiB);
  const { entry, segments } = programHeaders(image);
  assert.ok(segments.some((s) => s.memsz > s.filesz), "dummy.flat should have a bss to check");
  // Dirty the RAM the kernel will occupy, so zeroed bss proves the loader cleared it.
  for (const s of segments) memory.fill(s.paddr, s.memsz, 0xcc);

  const env = new TextEncoder().encode("TESTNAME=dummy\nFOO=bar\n");
  const result = loadMultiboot(memory, image, {
    fileName: "dummy.flat",
    cmdline: "dummy.flat foo=bar",
    modules: [{ name: "env", data: env }],
  });

  assert.equal(result.entry, entry);
  assert.equal(result.eax, MULTIBOOT_BOOTLOADER_MAGIC);
  assert.equal(result.eax, 0x2badb002);
  for (const s of segments) {
    assert.deepEqual(memory.read(s.paddr, s.filesz), image.subarray(s.offset, s.offset + s.filesz));
    const bss = memory.read(s.paddr + s.filesz, s.memsz - s.filesz);
    assert.ok(bss.every((b) => b === 0), `bss of segment at 0x${s.paddr.toString(16)} is zero`);
  }

  const kernelTop = Math.max(...segments.map((s) => s.paddr + s.memsz));
  const info = result.ebx;
  assert.equal(info, Math.ceil(kernelTop / 4096) * 4096, "info block on the first page above the kernel");
  assert.equal(memory.readU32(info + INFO.flags), (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9));
  assert.equal(memory.readU32(info + INFO.mem_lower), 640);
  assert.equal(memory.readU32(info + INFO.mem_upper), 127 * 1024);
  assert.equal(readCString(memory, memory.readU32(info + INFO.cmdline)), "dummy.flat foo=bar");
  assert.equal(readCString(memory, memory.readU32(info + INFO.boot_loader_name)), "workervisor");

  const mods = readModules(memory, info);
  assert.equal(mods.length, 1);
  assert.equal(mods[0].name, "env");
  assert.deepEqual(mods[0].data, env);
  assert.equal(mods[0].start % 4096, 0, "module page-aligned");
  assert.ok(mods[0].start >= kernelTop);

  assert.deepEqual(readMmap(memory, info), expectedMmap(128 * MiB));
  assert.equal(result.kernelEnd, mods[0].end, "the module is the last thing placed");
  for (const at of [INFO.cmdline, INFO.mods_addr, INFO.mmap_addr, INFO.boot_loader_name]) {
    const gpa = memory.readU32(info + at);
    assert.ok(gpa >= kernelTop && gpa < result.kernelEnd, `field at +${at} points between kernel and kernelEnd`);
  }
});

test("a bad checksum in dummy.flat is reported", (t) => {
  const image = readDummy(t);
  if (!image) return;
  const broken = image.slice();
  const { segments } = programHeaders(image);
  // The header sits at the start of the text segment in kvm-unit-tests kernels; find it.
  let at = 0;
  while (new DataView(broken.buffer).getUint32(at, true) !== 0x1badb002) at += 4;
  assert.ok(at < 8192 && at >= segments[0].offset);
  broken[at + 8] ^= 1;
  throwsFormat(() => loadMultiboot(ram(128 * MiB), broken, { fileName: "dummy.flat" }), /^dummy\.flat: multiboot header checksum wrong/);
});

test("a truncated dummy.flat is refused, not loaded short", (t) => {
  const image = readDummy(t);
  if (!image) return;
  const memory = ram(128 * MiB);
  throwsFormat(() => loadMultiboot(memory, image.subarray(0, 0x3000), { fileName: "dummy.flat" }), /truncated/);
  throwsFormat(() => loadMultiboot(memory, image.subarray(0, 40)), /ELF header truncated/);
  const { segments } = programHeaders(image);
  assert.ok(memory.read(segments[0].paddr, 64).every((b) => b === 0), "nothing was written");
});

test("modules are page-aligned, exact, and a kernel with none gets mods_count 0", () => {
  const memory = ram(4 * MiB);
  const kernel = craftElf32({ entry: 0x100000, segments: [{ paddr: 0x100000, data: bytes(100, 7), memsz: 0x1234 }] });
  const a = bytes(5000, 1);
  const b = bytes(1, 2);
  const result = loadMultiboot(memory, kernel, {
    cmdline: "k a=1",
    modules: [
      { name: "first arg", data: a },
      { name: "second", data: b },
    ],
  });
  const mods = readModules(memory, result.ebx);
  assert.deepEqual(
    mods.map((m) => [m.name, m.end - m.start, m.start % 4096]),
    [
      ["first arg", 5000, 0],
      ["second", 1, 0],
    ],
  );
  assert.deepEqual(mods[0].data, a);
  assert.deepEqual(mods[1].data, b);
  assert.ok(mods[1].start >= mods[0].end);
  assert.equal(result.kernelEnd, mods[1].end);

  const bare = ram(4 * MiB);
  const r2 = loadMultiboot(bare, kernel, {});
  assert.equal(bare.readU32(r2.ebx + INFO.mods_count), 0);
  assert.equal(readCString(bare, bare.readU32(r2.ebx + INFO.cmdline)), "");
});

test("a crafted ELF32 loads at its physical addresses with the entry translated", () => {
  const memory = ram(4 * MiB);
  const code = bytes(300, 3);
  const data = bytes(50, 4);
  const kernel = craftElf32({
    entry: 0xc0100010,
    segments: [
      { vaddr: 0xc0100000, paddr: 0x100000, data: code },
      { vaddr: 0xc0200000, paddr: 0x200000, data, memsz: 0x3000 },
    ],
  });
  assert.equal(detectKernelFormat(kernel).format, "multiboot-elf32");
  const result = loadMultiboot(memory, kernel, { cmdline: "tiny" });
  assert.equal(result.entry, 0x100010);
  assert.deepEqual(memory.read(0x100000, code.length), code);
  assert.deepEqual(memory.read(0x200000, data.length), data);
  assert.equal(result.ebx, 0x203000);
  assert.equal(memory.readU32(result.ebx + INFO.mem_upper), 3 * 1024);
  assert.deepEqual(readMmap(memory, result.ebx), expectedMmap(4 * MiB));
});

test("an a.out-kludge kernel (flag bit 16) loads from its header's addresses", () => {
  const memory = ram(4 * MiB);
  const load = 0x200000;
  const image = new Uint8Array(0x200);
  image.set(bytes(image.length, 9));
  const v = new DataView(image.buffer);
  const flags = 0x10000 | 0x3;
  const headerAt = 0x40;
  v.setUint32(headerAt, 0x1badb002, true);
  v.setUint32(headerAt + 4, flags, true);
  v.setUint32(headerAt + 8, -(0x1badb002 + flags) >>> 0, true);
  v.setUint32(headerAt + 12, load + headerAt, true); // header_addr
  v.setUint32(headerAt + 16, load, true); // load_addr
  v.setUint32(headerAt + 20, load + 0x180, true); // load_end_addr: the last 0x80 bytes stay behind
  v.setUint32(headerAt + 24, load + 0x2000, true); // bss_end_addr
  v.setUint32(headerAt + 28, load + 0x60, true); // entry_addr
  memory.fill(load, 0x2000, 0xcc);

  assert.equal(detectKernelFormat(image).format, "multiboot-aout-kludge");
  const result = loadMultiboot(memory, image, {});
  assert.equal(result.entry, load + 0x60);
  assert.deepEqual(memory.read(load, 0x180), image.subarray(0, 0x180));
  assert.ok(memory.read(load + 0x180, 0x2000 - 0x180).every((b) => b === 0), "bss zeroed");
  assert.equal(result.ebx, load + 0x2000);

  v.setUint32(headerAt + 20, load + 0x400, true);
  throwsFormat(() => loadMultiboot(ram(4 * MiB), image, { fileName: "kludge.bin" }), /^kludge\.bin: .*truncated/);
});

test("random bytes are not a kernel", () => {
  const junk = bytes(16384, 12345);
  assert.equal(detectKernelFormat(junk).format, "raw");
  throwsFormat(
    () => loadMultiboot(ram(4 * MiB), junk, { fileName: "junk.bin" }),
    /^junk\.bin: not an ELF file and no multiboot header in the first 8192 bytes$/,
  );
});

test("a segment beyond guest RAM is refused and nothing is written", () => {
  const memory = ram(4 * MiB);
  const kernel = craftElf32({
    entry: 0x100000,
    segments: [
      { paddr: 0x100000, data: bytes(64, 5) },
      { paddr: 0x3ff000, data: bytes(64, 6), memsz: 0x2000 },
    ],
  });
  throwsFormat(() => loadMultiboot(memory, kernel), /segment 1 at 0x3ff000 \(\+8192 bytes\) lies outside guest RAM/);
  assert.ok(memory.read(0x100000, 64).every((b) => b === 0), "nothing was written");
});

test("a kernel reaching the end of RAM leaves no room for the boot information", () => {
  const kernel = craftElf32({ entry: 0x100000, segments: [{ paddr: 0x100000, data: bytes(16, 1), memsz: 0x300000 }] });
  throwsFormat(() => loadMultiboot(ram(4 * MiB), kernel), /no room in guest RAM for the multiboot information/);
});

test("a wrong checksum in a crafted ELF is reported", () => {
  const kernel = craftElf32({ entry: 0x100000, segments: [{ paddr: 0x100000, data: bytes(16, 1) }], checksumDelta: 1 });
  assert.equal(detectKernelFormat(kernel).format, "elf32");
  throwsFormat(() => loadMultiboot(ram(4 * MiB), kernel), /multiboot header checksum wrong at file offset 0x54/);
});

test("unsupported required header flags are refused; video (bit 2) is ignored", () => {
  const segments = [{ paddr: 0x100000, data: bytes(16, 1) }];
  throwsFormat(
    () => loadMultiboot(ram(4 * MiB), craftElf32({ entry: 0x100000, segments, mbFlags: (1 << 3) | 1 })),
    /requires features this loader does not provide \(flag bit 3\)/,
  );
  const ok = loadMultiboot(ram(4 * MiB), craftElf32({ entry: 0x100000, segments, mbFlags: 0b111 }));
  assert.equal(ok.entry, 0x100000);
});

test("other formats are recognised by name and refused", () => {
  const segments = [{ paddr: 0x100000, data: bytes(16, 1) }];

  const elf64 = new Uint8Array(128);
  elf64.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  assert.equal(detectKernelFormat(elf64).format, "elf64");
  throwsFormat(() => loadMultiboot(ram(4 * MiB), elf64), /ELF64 file without a multiboot header/);

  const elf64Multiboot = craftElf32({ entry: 0x100000, segments, elfClass: 2 });
  throwsFormat(() => loadMultiboot(ram(4 * MiB), elf64Multiboot), /ELF64 multiboot kernels are not supported/);

  const arm = craftElf32({ entry: 0x100000, segments, machine: 40 });
  throwsFormat(() => loadMultiboot(ram(4 * MiB), arm), /not x86 \(EM_386\)/);

  const bz = new Uint8Array(0x1000);
  bz.set([0x55, 0xaa], 0x1fe);
  bz.set(new TextEncoder().encode("HdrS"), 0x202);
  assert.equal(detectKernelFormat(bz).format, "bzimage");
  throwsFormat(
    () => loadMultiboot(ram(4 * MiB), bz, { fileName: "vmlinuz" }),
    /^vmlinuz: bzImage found: Linux boot protocol not supported by this loader$/,
  );

  const noEntry = craftElf32({ entry: 0x500000, segments });
  throwsFormat(() => loadMultiboot(ram(4 * MiB), noEntry), /entry point 0x500000 is not inside any loadable segment/);
});
