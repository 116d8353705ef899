/** What guests/virtio-census.c writes to sectors 0-1 of the disk in transport slot `slot`. */
export function censusPattern(slot: number): Buffer {
  return Buffer.from(Array.from({ length: 1024 }, (_, i) => (slot * 31 + i * 7) & 0xff));
}
