/**
 * Byte helpers for the guest programs of the VM tests: little-endian immediates and text.
 * The programs themselves live in the tests, one instruction per line with its assembly.
 */

/** Port of the debug-exit device (`vm.addDebugExit()`): a write ends the VM with that status. */
export const DEBUG_EXIT = 0xf4;

export function imm16(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff];
}

export function imm32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
}

export function imm64(value: bigint): number[] {
  return Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(i * 8)) & 0xffn));
}

export function ascii(text: string): number[] {
  return Array.from(Buffer.from(text, "latin1"));
}
