import koffi from "koffi";

// memcpy(dst, src, 0) copies nothing and returns dst: a portable way to learn the
// address koffi passes for a buffer, without a native addon of our own.
const libc = koffi.load("libc.so.6");
const memcpyAddress = libc.func("uintptr_t memcpy(void *dst, void *src, size_t n)");

/** Host virtual address of the first byte of `buffer`'s backing store. */
export function hostAddressOf(buffer: SharedArrayBuffer): bigint {
  const bytes = new Uint8Array(buffer);
  const address = memcpyAddress(bytes, bytes, 0) as number | bigint;
  return BigInt(address);
}
