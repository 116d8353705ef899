/** Byte helpers shared by the firmware tables (ACPI, MP table): signatures and 8-bit checksums. */

export function putAscii(bytes: Uint8Array, at: number, text: string): void {
  for (let i = 0; i < text.length; i++) bytes[at + i] = text.charCodeAt(i);
}

/** The byte that makes `bytes[start, start + length)` sum to 0 mod 256, given that it is 0 now. */
export function checksumByte(bytes: Uint8Array, start: number, length: number): number {
  let sum = 0;
  for (let i = start; i < start + length; i++) sum = (sum + bytes[i]) & 0xff;
  return (0x100 - sum) & 0xff;
}
