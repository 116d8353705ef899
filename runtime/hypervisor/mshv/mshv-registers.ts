/**
 * hv_x64_segment_register and hv_x64_table_register <-> the neutral Segment and
 * DescriptorTable. The attribute bits are the descriptor's access byte and flags (type,
 * S, DPL, P, AVL, L, D/B, G); an unusable segment is one that is not present.
 */
import type { DescriptorTable, Segment } from "../x86/cpu-state.js";
import { Offset } from "./mshv-abi.js";

const SEG = Offset.hv_x64_segment_register;

export function readSegment(value: DataView, at: number): Segment {
  const attributes = value.getUint16(at + SEG.attributes, true);
  const present = (attributes >> 7) & 1;
  return {
    base: value.getBigUint64(at + SEG.base, true), limit: value.getUint32(at + SEG.limit, true),
    selector: value.getUint16(at + SEG.selector, true), type: attributes & 0xf, s: (attributes >> 4) & 1,
    dpl: (attributes >> 5) & 3, present, avl: (attributes >> 12) & 1, l: (attributes >> 13) & 1,
    db: (attributes >> 14) & 1, g: (attributes >> 15) & 1, unusable: present ? 0 : 1,
  };
}

export function writeSegment(value: DataView, at: number, segment: Segment): void {
  value.setBigUint64(at + SEG.base, segment.base, true);
  value.setUint32(at + SEG.limit, segment.limit >>> 0, true);
  value.setUint16(at + SEG.selector, segment.selector, true);
  const present = segment.unusable ? 0 : segment.present;
  value.setUint16(at + SEG.attributes,
    (segment.type & 0xf) | ((segment.s & 1) << 4) | ((segment.dpl & 3) << 5) | ((present & 1) << 7) |
    ((segment.avl & 1) << 12) | ((segment.l & 1) << 13) | ((segment.db & 1) << 14) | ((segment.g & 1) << 15), true);
}

const TABLE = Offset.hv_x64_table_register;

export function readTable(value: DataView, at: number): DescriptorTable {
  return { limit: value.getUint16(at + TABLE.limit, true), base: value.getBigUint64(at + TABLE.base, true) };
}

export function writeTable(value: DataView, at: number, table: DescriptorTable): void {
  value.setUint16(at + TABLE.limit, table.limit, true);
  value.setBigUint64(at + TABLE.base, table.base, true);
}
