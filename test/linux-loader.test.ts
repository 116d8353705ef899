/**
 * The Linux loader on real KVM with small probe kernels: each path (ELF vmlinux, bzImage
 * decompressed on the host from gzip, lz4, xz or zstd, bzImage entered at its own 64-bit entry) hands
 * the kernel the zero page in RSI with our command line, initrd and e820 map; bad kernels
 * and initrds are refused with messages naming the cause.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PcMachine } from "../runtime/pc-machine.js";
import { loadLinux } from "../runtime/boot/linux/linux-loader.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { kernelCompressed, probeBzImage, probeVmlinux, withAppendedSize, type BzImageFields } from "./linux-images.js";
import { decompressPayload } from "../runtime/boot/linux/payload.js";
import { x86BcjDecode } from "../runtime/boot/linux/xz-stream.js";
import { zstdFrameSizes } from "../runtime/boot/linux/zstd-frame.js";
import { execFileSync } from "node:child_process";
import { PVM_KERNEL_PARAMETERS, withKernelParameters } from "../runtime/boot/linux/pvm-fallbacks.js";
import { ON_PVM } from "./linux-guest.js";

const MiB = 1024 * 1024;
const CMDLINE = "console=ttyS0 probe=yes -- echo hello";
const INITRD = new TextEncoder().encode("initrd-bytes\0");

async function bootProbe(kernel: Uint8Array, extra: { decompression?: "host" | "guest"; cacheDir?: string; pvmFallbacks?: boolean } = {}) {
  let output = "";
  const machine = new PcMachine({
    kernel, kernelName: "probe", cmdline: CMDLINE, initrd: INITRD, memory: 64 * MiB,
    decompression: extra.decompression, kernelCacheDir: extra.cacheDir, pvmFallbacks: extra.pvmFallbacks ?? false,
    console: (byte) => (output += String.fromCharCode(byte)),
  });
  const result = await machine.run();
  return { result, output, linux: machine.linux!, machine };
}

test("ELF vmlinux: entered in long mode with RSI at the zero page, our command line, initrd and e820 map", async () => {
  const { result, output, linux } = await bootProbe(probeVmlinux());
  assert.equal(output, `${CMDLINE}initrd-bytes`);
  assert.deepEqual(result, { reason: "debug-exit", status: linux.e820.length });
  assert.equal(linux.format, "vmlinux");
  assert.equal(linux.e820.length, 4, "RAM below the EBDA, EBDA, BIOS area, RAM above 1 MiB");
  assert.ok(linux.initrd!.address >= linux.kernelRange.end, "initrd above the kernel");
  assert.ok(linux.initrd!.address + INITRD.length <= 64 * MiB, "initrd inside RAM");
});

for (const payload of ["gzip", "lz4", "xz", "zstd", "elf"] as const) {
  test(`bzImage with a ${payload} payload: decompressed on the host, the vmlinux entered directly`, async () => {
    const { result, output, linux } = await bootProbe(probeBzImage(payload));
    assert.equal(output, `${CMDLINE}initrd-bytes`);
    assert.deepEqual(result, { reason: "debug-exit", status: 4 });
    assert.equal(linux.format, "bzImage");
    assert.equal(linux.entryPath, "vmlinux");
    assert.equal(linux.payloadFormat, payload === "elf" ? "uncompressed-elf" : payload);
  });
}

test("bzImage with in-guest decompression: entered at the protected-mode image's 64-bit entry (+0x200)", async () => {
  // The probe at +0x200 stands in for the kernel's decompressor; it must find the same zero page.
  const { result, output, linux } = await bootProbe(probeBzImage("lz4"), { decompression: "guest" });
  assert.equal(linux.entryPath, "bzImage decompressor");
  assert.equal(output, `${CMDLINE}initrd-bytes`);
  assert.deepEqual(result, { reason: "debug-exit", status: 4 });
});

test("decompressed kernels are cached by content hash: the second boot of the same bzImage reads the cache", async () => {
  const dir = mkdtempSync(join(tmpdir(), "wv-kernels-"));
  try {
    const image = probeBzImage("gzip");
    const first = await bootProbe(image, { cacheDir: dir });
    const second = await bootProbe(image, { cacheDir: dir });
    assert.equal(first.linux.decompressedFromCache, false);
    assert.equal(second.linux.decompressedFromCache, true);
    assert.equal(second.output, first.output);
    assert.equal(readdirSync(dir).filter((name) => name.endsWith(".vmlinux")).length, 1);
    const other = await bootProbe(probeBzImage("lz4"), { cacheDir: dir });
    assert.equal(other.linux.decompressedFromCache, false, "a different payload is a different entry");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function loadError(kernel: Uint8Array, options: { initrd?: Uint8Array; cmdline?: string; memory?: number } = {}): Error {
  const memory = GuestMemory.allocate([{ gpa: 0, size: options.memory ?? 64 * MiB }]);
  try {
    loadLinux(memory, { kernel, fileName: "k", rsdpAddress: 0xe0000, initrd: options.initrd, cmdline: options.cmdline });
  } catch (error) {
    return error as Error;
  }
  assert.fail("the kernel was accepted");
}

const badHeaders: [string, BzImageFields, RegExp][] = [
  ["a 32-bit-only kernel", { xloadflags: 0 }, /xloadflags 0x0 lacks XLF_KERNEL_64.*32-bit-only/],
  ["an old boot protocol", { version: 0x206 }, /boot protocol version 2\.6 is older than 2\.12 \(version field\)/],
  ["a zImage", { loadflags: 0 }, /loadflags 0x0 lacks LOADED_HIGH/],
  ["a bad kernel_alignment", { kernelAlignment: 0x30000 }, /kernel_alignment 0x30000 is not a power of two/],
  ["a kernel too large for RAM", { initSize: 0x1000_0000 }, /init_size 0x10000000\).*give the VM more memory/],
];
for (const [what, fields, message] of badHeaders) {
  test(`bzImage refused: ${what}, naming the field`, () => {
    assert.match(loadError(probeBzImage("gzip", fields)).message, message);
  });
}

test("truncated, random and non-x86-64 kernels are refused with what was expected", () => {
  const image = probeBzImage("gzip");
  assert.match(loadError(image.subarray(0, image.length - 100)).message, /the file is truncated/);
  assert.match(loadError(image.subarray(0, 0x250)).message, /too short for a bzImage setup header \(truncated\?\)/);
  const random = new Uint8Array(8192).map((_, i) => (i * 2654435761) >>> 24);
  assert.match(loadError(random).message, /neither a bzImage .* nor an ELF vmlinux .*is it a Linux kernel\?/);
  assert.match(loadError(probeVmlinux(undefined, undefined, 1)).message, /not a 64-bit x86-64 one/);
  const vmlinux = probeVmlinux();
  assert.match(loadError(vmlinux.subarray(0, 0x1004)).message, /runs past the end .*truncated/);
  const corrupt = probeBzImage("gzip");
  corrupt.fill(0x55, 0x1400 + 0x10, 0x1400 + 0x40); // inside the gzip stream
  assert.match(loadError(corrupt).message, /gzip payload does not decompress/);
});

test("an initrd larger than RAM, a vmlinux outside RAM and an over-long command line are refused", () => {
  assert.match(loadError(probeVmlinux(), { initrd: new Uint8Array(80 * MiB) }).message, /initrd \(83886080 bytes\) does not fit .*more memory/);
  assert.match(loadError(probeVmlinux(undefined, 0x800_0000)).message, /outside guest RAM .*give the VM more memory/);
  assert.match(loadError(probeVmlinux(undefined, 0x8_0000)).message, /loads at 0x80000, below 1 MiB, where the boot structures live/);
  assert.match(loadError(probeBzImage("gzip", { cmdlineSize: 16 }), { cmdline: "x".repeat(17) }).message, /17 bytes; this kernel takes at most 16 \(cmdline_size\)/);
});

test("PVM fallback parameters go before '--', whose words belong to init, and only once", () => {
  assert.equal(withKernelParameters("console=ttyS0 -- echo hi", ["noxsave"]), "console=ttyS0 noxsave -- echo hi");
  assert.equal(withKernelParameters("console=ttyS0", ["noxsave", "a=b"]), "console=ttyS0 noxsave a=b");
  assert.equal(withKernelParameters("noxsave -- noxsave", ["noxsave"]), "noxsave -- noxsave");
  assert.equal(withKernelParameters("", ["noxsave"]), "noxsave");
});

test("on a PVM host the kernel is given the fallback parameters; elsewhere the command line is untouched", async () => {
  const { output, machine } = await bootProbe(probeVmlinux(), { pvmFallbacks: true });
  const expected = ON_PVM ? withKernelParameters(CMDLINE, PVM_KERNEL_PARAMETERS) : CMDLINE;
  assert.equal(output, `${expected}initrd-bytes`);
  assert.equal(machine.linux!.cmdline, expected);
  assert.equal(machine.pvmFallbacks !== undefined, ON_PVM);
  if (ON_PVM) assert.deepEqual(machine.pvmFallbacks!.kernelParameters, [...PVM_KERNEL_PARAMETERS]);
});

/** x86-shaped bytes: CALL/JMP opcodes every few bytes with near and far targets, the rest noise. */
function codeLike(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let seed = 0x12345678;
  for (let i = 0; i < length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const roll = seed >>> 24;
    if (roll < 40) bytes[i] = 0xe8 + (roll & 1);
    else if (roll < 80) bytes[i] = roll & 1 ? 0xff : 0x00;
    else bytes[i] = seed >>> 16;
  }
  return bytes;
}

test("xz payloads as Linux builds them (x86 BCJ + LZMA2 + CRC32) decode byte for byte as xz's own decoder does", () => {
  for (const length of [1, 5, 4096, 300_000]) {
    const data = codeLike(length);
    assert.deepEqual(decompressPayload(kernelCompressed("xz", data)), data, `${length} bytes`);
  }
  // The filter alone, against xz's raw BCJ encoder: no LZMA2 in the way.
  const data = codeLike(65536);
  const encoded = execFileSync("xz", ["--format=raw", "--x86", "--lzma2=preset=0", "-c"], { input: data });
  const filteredOnly = execFileSync("xz", ["--format=raw", "--lzma2=preset=0", "-dc"], { input: encoded });
  assert.notDeepEqual(new Uint8Array(filteredOnly), data, "the encoder rewrote some CALL/JMP targets");
  const decoded = new Uint8Array(filteredOnly);
  x86BcjDecode(decoded);
  assert.deepEqual(decoded, data);
});

test("xz and zstd payloads that are corrupt, truncated, oversized or of another filter chain are refused, naming why", () => {
  const vmlinux = probeVmlinux();
  const xz = kernelCompressed("xz", vmlinux);
  const corrupt = xz.slice();
  corrupt[40] ^= 0x55; // inside the LZMA2 data
  assert.throws(() => decompressPayload(corrupt), /xz payload does not decompress: (LZMA2 data does not decode|a block's CRC32 does not match)/);
  assert.throws(() => decompressPayload(withAppendedSize(xz.subarray(0, xz.length - 30), vmlinux.length)), /xz payload does not decompress: no stream footer at the end \(truncated\?\)/);
  assert.throws(() => decompressPayload(withAppendedSize(xz.subarray(0, xz.length - 4), vmlinux.length + 1)), new RegExp(`the index declares ${vmlinux.length} bytes, ${vmlinux.length + 1} were expected`));
  // A block that would decode to more than the index says is refused before decoding.
  const grown = kernelCompressed("xz", vmlinux);
  const chunk = 12 + (grown[12] + 1) * 4; // the first LZMA2 chunk header, after stream and block headers
  assert.ok(grown[chunk] >= 0xe0, "the block starts with a dictionary-reset LZMA chunk");
  grown[chunk] |= 0x1f; // its unpacked size gains 31 * 64 KiB
  assert.throws(() => decompressPayload(grown), new RegExp(`xz payload does not decompress: a block's LZMA2 chunks add up to ${vmlinux.length + 0x1f0000} bytes, the index says ${vmlinux.length}`));
  const delta = execFileSync("xz", ["--format=xz", "--check=crc32", "--delta=dist=4", "--lzma2=preset=0", "-c"], { input: vmlinux });
  assert.throws(() => decompressPayload(withAppendedSize(delta, vmlinux.length)), /filter chain has filter 0x3 at position 1 of 2; only \[x86 BCJ,\] LZMA2/);
  const zstd = kernelCompressed("zstd", vmlinux);
  assert.throws(() => decompressPayload(withAppendedSize(zstd.subarray(0, zstd.length - 4), vmlinux.length - 1)), new RegExp(`zstd payload does not decompress: (the frame declares ${vmlinux.length} bytes, ${vmlinux.length - 1} were expected|the data decodes to more than ${vmlinux.length - 1} bytes)`));
  assert.throws(() => decompressPayload(withAppendedSize(zstd.subarray(0, zstd.length - 4), vmlinux.length + 1)), new RegExp(`zstd payload does not decompress: (the frame declares ${vmlinux.length} bytes, ${vmlinux.length + 1} were expected|the data decodes to ${vmlinux.length} bytes)`));
  assert.throws(() => decompressPayload(withAppendedSize(zstd.subarray(0, zstd.length - 20), vmlinux.length)), /zstd payload does not decompress: the data does not decode: .*truncated or corrupt/);
  // Streamed without a declared size, as Linux's build does (cat | zstd): the count is the bound.
  const streamed = execFileSync("sh", ["-c", "cat | zstd -19 -q -c"], { input: vmlinux });
  assert.equal(zstdFrameSizes(streamed).content, undefined, "a piped frame declares no content size");
  assert.deepEqual(decompressPayload(withAppendedSize(streamed, vmlinux.length)), vmlinux);
  assert.throws(() => decompressPayload(withAppendedSize(streamed, vmlinux.length - 1)), new RegExp(`the data decodes to more than ${vmlinux.length - 1} bytes`));
});
