/**
 * An encoder for the ACPI Machine Language subset a DSDT of a virtual PC needs: names,
 * integers, strings, buffers, packages, Name/Scope/Device/Method, EISA IDs and resource
 * templates. Facts from ACPI 6.5, chapter 20 (AML grammar) and 6.4 (resource descriptors).
 *
 * Every function returns the encoded bytes as a plain array, so terms compose by nesting
 * calls; `amlBytes` turns a term list into the table body. Values the grammar cannot hold
 * (a name segment with a bad character, an integer out of range, a package of more than
 * 255 elements) throw AmlEncodingError naming the value.
 */

export type Aml = number[];

export class AmlEncodingError extends Error {
  override name = "AmlEncodingError";
}

// Opcodes (20.3 / 20.2.5).
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const NAME_OP = 0x08;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const METHOD_OP = 0x14;
const RETURN_OP = 0xa4;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82;
const ROOT_CHAR = 0x5c;
const PARENT_PREFIX_CHAR = 0x5e;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;

/** PkgLength can count up to 2^28 - 1 bytes (20.2.4). */
const MAX_PKG_LENGTH = 2 ** 28 - 1;

function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/**
 * A PkgLength for `contentLength` bytes that follow it; the encoded length counts the
 * PkgLength bytes themselves (20.2.4): one byte up to 63, else a lead byte whose bits 7:6
 * say how many bytes follow, its bits 3:0 the low nibble, the next bytes the rest.
 */
export function pkgLength(contentLength: number): Aml {
  for (let extra = 0; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (extra === 0 && total <= 0x3f) return [total];
    if (extra > 0 && total < 2 ** (4 + 8 * extra)) {
      const out = [(extra << 6) | (total & 0x0f)];
      for (let i = 0; i < extra; i++) out.push((total >>> (4 + 8 * i)) & 0xff);
      return out;
    }
  }
  throw new AmlEncodingError(`AML: ${contentLength} bytes exceed what a PkgLength can count (${hex(MAX_PKG_LENGTH)})`);
}

/** A PkgLength followed by its contents. */
function withPkgLength(contents: Aml): Aml {
  return [...pkgLength(contents.length), ...contents];
}

/** A NameSeg: 4 characters, the first A-Z or '_', the rest A-Z, 0-9 or '_', padded with '_'. */
export function nameSeg(segment: string): Aml {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(segment)) {
    throw new AmlEncodingError(`AML: "${segment}" is not a name segment (1-4 of A-Z, 0-9, _; not starting with a digit)`);
  }
  return Array.from(segment.padEnd(4, "_"), (c) => c.charCodeAt(0));
}

/** A NameString: an optional root '\' or parent '^' prefixes, then dot-separated segments. */
export function nameString(path: string): Aml {
  const out: Aml = [];
  let rest = path;
  if (rest.startsWith("\\")) {
    out.push(ROOT_CHAR);
    rest = rest.slice(1);
  } else {
    while (rest.startsWith("^")) {
      out.push(PARENT_PREFIX_CHAR);
      rest = rest.slice(1);
    }
  }
  const segments = rest === "" ? [] : rest.split(".");
  if (segments.length > 255) throw new AmlEncodingError(`AML: "${path}" has more than 255 name segments`);
  const encoded = segments.flatMap(nameSeg);
  if (segments.length === 0) out.push(0x00); // NullName
  else if (segments.length === 2) out.push(DUAL_NAME_PREFIX);
  else if (segments.length > 2) out.push(MULTI_NAME_PREFIX, segments.length);
  return [...out, ...encoded];
}

/** An integer in the shortest form: Zero, One, or a Byte/Word/DWord/QWord constant. */
export function integer(value: number | bigint): Aml {
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn || (typeof value === "number" && !Number.isSafeInteger(value))) {
    throw new AmlEncodingError(`AML: integer ${value} is not an unsigned 64-bit whole number`);
  }
  if (v === 0n) return [ZERO_OP];
  if (v === 1n) return [ONE_OP];
  const little = (bytes: number): Aml => Array.from({ length: bytes }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));
  if (v <= 0xffn) return [BYTE_PREFIX, ...little(1)];
  if (v <= 0xffffn) return [WORD_PREFIX, ...little(2)];
  if (v <= 0xffff_ffffn) return [DWORD_PREFIX, ...little(4)];
  return [QWORD_PREFIX, ...little(8)];
}

/** A String constant: ASCII 0x01-0x7F, NUL-terminated. */
export function string(text: string): Aml {
  const codes = Array.from(text, (c) => c.charCodeAt(0));
  if (codes.some((c) => c < 1 || c > 0x7f)) throw new AmlEncodingError(`AML: string "${text}" must be ASCII without NUL`);
  return [STRING_PREFIX, ...codes, 0];
}

/** A Buffer of the given bytes, its size an integer term. */
export function buffer(bytes: ArrayLike<number>): Aml {
  return [BUFFER_OP, ...withPkgLength([...integer(bytes.length), ...Array.from(bytes)])];
}

/** A Package of up to 255 elements, each an already-encoded data term or name reference. */
export function aPackage(elements: Aml[]): Aml {
  if (elements.length > 255) throw new AmlEncodingError(`AML: a Package holds at most 255 elements, got ${elements.length}`);
  return [PACKAGE_OP, ...withPkgLength([elements.length, ...elements.flat()])];
}

/** Name(path, data). */
export function name(path: string, data: Aml): Aml {
  return [NAME_OP, ...nameString(path), ...data];
}

/** Scope(path) { terms }. */
export function scope(path: string, terms: Aml[]): Aml {
  return [SCOPE_OP, ...withPkgLength([...nameString(path), ...terms.flat()])];
}

/** Device(path) { terms }. */
export function device(path: string, terms: Aml[]): Aml {
  return [EXT_OP_PREFIX, DEVICE_OP, ...withPkgLength([...nameString(path), ...terms.flat()])];
}

/** Method(path, argCount, NotSerialized) { terms }. */
export function method(path: string, argCount: number, terms: Aml[]): Aml {
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) {
    throw new AmlEncodingError(`AML: a method takes 0 to 7 arguments, got ${argCount}`);
  }
  return [METHOD_OP, ...withPkgLength([...nameString(path), argCount, ...terms.flat()])];
}

/** Return(value). */
export function returnValue(value: Aml): Aml {
  return [RETURN_OP, ...value];
}

/**
 * The 32-bit compressed EISA ID of e.g. "PNP0A03" as an integer term: three letters of 5
 * bits (A = 1) and four hex digits, stored big-endian in a little-endian DWord.
 */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new AmlEncodingError(`AML: EISA ID "${id}" must be 3 capital letters and 4 hex digits`);
  const letters = [0, 1, 2].map((i) => id.charCodeAt(i) - 0x40);
  const value = ((letters[0] << 26) | (letters[1] << 21) | (letters[2] << 16) | parseInt(id.slice(3), 16)) >>> 0;
  const swapped = ((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24);
  return integer(swapped >>> 0);
}

// Resource descriptors (6.4). Small: one tag byte (name << 3 | length). Large: 0x80 | name, u16 length.
const SMALL_IRQ = 0x04;
const SMALL_IO = 0x08;
const SMALL_END_TAG = 0x0f;
const LARGE_MEMORY32_FIXED = 0x06;
const LARGE_DWORD_ADDRESS = 0x07;
const LARGE_WORD_ADDRESS = 0x08;
const LARGE_EXTENDED_INTERRUPT = 0x09;
const LARGE_QWORD_ADDRESS = 0x0a;

function le(value: number | bigint, bytes: number, what: string): Aml {
  const v = BigInt(value);
  if (v < 0n || v >= 1n << BigInt(8 * bytes)) throw new AmlEncodingError(`AML: ${what} ${hex(v)} does not fit in ${bytes} bytes`);
  return Array.from({ length: bytes }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));
}

function small(itemName: number, body: Aml): Aml {
  return [(itemName << 3) | body.length, ...body];
}

function large(itemName: number, body: Aml): Aml {
  return [0x80 | itemName, ...le(body.length, 2, "descriptor length"), ...body];
}

/** IO(Decode16, min, max, alignment, length): an I/O port range with 16-bit decode. */
export function ioPort(min: number, max: number, alignment: number, length: number): Aml {
  return small(SMALL_IO, [0x01, ...le(min, 2, "I/O min"), ...le(max, 2, "I/O max"), ...le(alignment, 1, "I/O alignment"), ...le(length, 1, "I/O length")]);
}

/** IRQNoFlags() { irqs }: ISA IRQs (0-15), edge-triggered, active-high, exclusive. */
export function irqNoFlags(irqs: number[]): Aml {
  let mask = 0;
  for (const irq of irqs) {
    if (!Number.isInteger(irq) || irq < 0 || irq > 15) throw new AmlEncodingError(`AML: IRQ descriptor IRQs are 0-15, got ${irq}`);
    mask |= 1 << irq;
  }
  return small(SMALL_IRQ, le(mask, 2, "IRQ mask"));
}

/** Memory32Fixed(ReadWrite, base, length). */
export function memory32Fixed(base: number, length: number): Aml {
  return large(LARGE_MEMORY32_FIXED, [0x01, ...le(base, 4, "memory base"), ...le(length, 4, "memory length")]);
}

export interface InterruptFlags {
  /** Level-triggered (else edge). */
  level: boolean;
  /** Active-low (else active-high). */
  activeLow: boolean;
  /** Shared with other devices (else exclusive). */
  shared: boolean;
}

/** Interrupt(ResourceConsumer, trigger, polarity, sharing) { gsis }: the extended interrupt descriptor. */
export function extendedInterrupt(flags: InterruptFlags, gsis: number[]): Aml {
  if (gsis.length < 1 || gsis.length > 255) throw new AmlEncodingError(`AML: an interrupt descriptor lists 1 to 255 interrupts, got ${gsis.length}`);
  const bits = 0x01 | (flags.level ? 0 : 0x02) | (flags.activeLow ? 0x04 : 0) | (flags.shared ? 0x08 : 0);
  return large(LARGE_EXTENDED_INTERRUPT, [bits, gsis.length, ...gsis.flatMap((g) => le(g, 4, "interrupt number"))]);
}

/** A bus-number, I/O or memory range a bridge produces (decodes for its children). */
export interface AddressRange {
  min: number | bigint;
  max: number | bigint;
}

// Address space descriptors (6.4.3.5): resource type, general and type-specific flags.
const RESOURCE_MEMORY = 0;
const RESOURCE_IO = 1;
const RESOURCE_BUS_NUMBER = 2;
/** ResourceProducer, PosDecode, MinFixed (bit 2), MaxFixed (bit 3). */
const PRODUCER_FIXED_RANGE = 0x0c;
/** I/O: EntireRange (ISA and non-ISA ports), TypeStatic. */
const IO_ENTIRE_RANGE = 0x03;
/** Memory: ReadWrite, Cacheable, AddressRangeMemory, TypeStatic. */
const MEMORY_CACHEABLE_RW = 0x03;

function addressSpace(itemName: number, bytes: number, resourceType: number, typeFlags: number, range: AddressRange): Aml {
  const min = BigInt(range.min);
  const max = BigInt(range.max);
  if (max < min) throw new AmlEncodingError(`AML: address range ${hex(min)}-${hex(max)} ends before it starts`);
  return large(itemName, [
    resourceType, PRODUCER_FIXED_RANGE, typeFlags,
    ...le(0, bytes, "granularity"), ...le(min, bytes, "range min"), ...le(max, bytes, "range max"),
    ...le(0, bytes, "translation offset"), ...le(max - min + 1n, bytes, "range length"),
  ]);
}

/** WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, length). */
export function wordBusNumber(range: AddressRange): Aml {
  return addressSpace(LARGE_WORD_ADDRESS, 2, RESOURCE_BUS_NUMBER, 0, range);
}

/** WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length). */
export function wordIo(range: AddressRange): Aml {
  return addressSpace(LARGE_WORD_ADDRESS, 2, RESOURCE_IO, IO_ENTIRE_RANGE, range);
}

/** DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, min, max, 0, length). */
export function dwordMemory(range: AddressRange): Aml {
  return addressSpace(LARGE_DWORD_ADDRESS, 4, RESOURCE_MEMORY, MEMORY_CACHEABLE_RW, range);
}

/** QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, min, max, 0, length). */
export function qwordMemory(range: AddressRange): Aml {
  return addressSpace(LARGE_QWORD_ADDRESS, 8, RESOURCE_MEMORY, MEMORY_CACHEABLE_RW, range);
}

/**
 * ResourceTemplate() { descriptors }: a Buffer of the descriptors and an End Tag whose
 * checksum makes the descriptors and the tag sum to zero (6.4.2.9).
 */
export function resourceTemplate(descriptors: Aml[]): Aml {
  const body = [...descriptors.flat(), (SMALL_END_TAG << 3) | 1];
  const sum = body.reduce((s, b) => (s + b) & 0xff, 0);
  return buffer([...body, (0x100 - sum) & 0xff]);
}

/** A term list as the bytes that follow a definition block's header. */
export function amlBytes(terms: Aml[]): Uint8Array {
  return Uint8Array.from(terms.flat());
}
