/** x86 segment descriptors and their cached form, for the CPU modes our loaders enter. */
import type { Segment } from "../hypervisor/x86/cpu-state.js";

export const SegmentType = {
  DATA_READ_WRITE_ACCESSED: 0x3,
  CODE_EXECUTE_READ_ACCESSED: 0xb,
  TSS_BUSY: 0xb,
} as const;

/** A flat 4 GiB segment as the CPU caches it after loading `selector`. */
export function flatSegment(selector: number, code: boolean, options: { long?: boolean; dpl?: number } = {}): Segment {
  const long = options.long ?? false;
  return {
    base: 0n,
    limit: 0xffff_ffff,
    selector,
    type: code ? SegmentType.CODE_EXECUTE_READ_ACCESSED : SegmentType.DATA_READ_WRITE_ACCESSED,
    present: 1,
    dpl: options.dpl ?? 0,
    db: code && long ? 0 : 1,
    s: 1,
    l: code && long ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** A 64 KiB real-mode segment at `selector << 4`. */
export function realModeSegment(selector: number, code: boolean): Segment {
  return {
    base: BigInt(selector << 4),
    limit: 0xffff,
    selector,
    type: code ? SegmentType.CODE_EXECUTE_READ_ACCESSED : SegmentType.DATA_READ_WRITE_ACCESSED,
    present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0,
  };
}

/** The 8-byte GDT entry matching a cached code/data segment (Intel SDM vol. 3, 3.4.5). */
export function gdtEntry(segment: Segment): bigint {
  const base = Number(segment.base & 0xffff_ffffn);
  const limit = segment.g ? segment.limit >>> 12 : segment.limit;
  const access = segment.type | (segment.s << 4) | (segment.dpl << 5) | (segment.present << 7);
  const flags = (segment.avl) | (segment.l << 1) | (segment.db << 2) | (segment.g << 3);
  return (
    BigInt(limit & 0xffff) |
    (BigInt(base & 0xffffff) << 16n) |
    (BigInt(access) << 40n) |
    (BigInt((limit >>> 16) & 0xf) << 48n) |
    (BigInt(flags) << 52n) |
    (BigInt((base >>> 24) & 0xff) << 56n)
  );
}

/** The 16-byte long-mode TSS descriptor, as two GDT slots. */
export function tssDescriptor(base: number, limit: number): [bigint, bigint] {
  const low =
    BigInt(limit & 0xffff) |
    (BigInt(base & 0xffffff) << 16n) |
    (BigInt(SegmentType.TSS_BUSY | 0x80) << 40n) |
    (BigInt((limit >>> 16) & 0xf) << 48n) |
    (BigInt((base >>> 24) & 0xff) << 56n);
  return [low, BigInt(Math.floor(base / 2 ** 32))];
}
