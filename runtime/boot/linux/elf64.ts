/**
 * Just enough of ELF64 (System V gABI, x86-64 psABI) to load a vmlinux and to read a
 * kernel module's .modinfo: the file header, program headers and section headers, every
 * offset and size checked against the file before it is used.
 */

export class ElfFormatError extends Error {
  override name = "ElfFormatError";
}

export interface ElfSegment {
  /** PT_LOAD only: where the kernel wants it in guest-physical memory. */
  physicalAddress: number;
  fileOffset: number;
  fileSize: number;
  memorySize: number;
}

export interface ElfSection {
  name: string;
  fileOffset: number;
  size: number;
}

export interface Elf64File {
  machine: number;
  entry: number;
  loadSegments: ElfSegment[];
  sections(): ElfSection[];
}

export const ELF_MAGIC = 0x464c457f; // "\x7fELF" read little-endian
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
export const EM_X86_64 = 62;
const PT_LOAD = 1;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;

function u64(view: DataView, at: number, what: string): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfFormatError(`ELF: ${what} 0x${value.toString(16)} is out of range`);
  return Number(value);
}

export function isElf(data: Uint8Array): boolean {
  return data.length >= 4 && new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true) === ELF_MAGIC;
}

/** Parses `data` as a little-endian ELF64 file; `what` names it in errors ("vmlinux", "module virtio.ko"). */
export function parseElf64(data: Uint8Array, what: string): Elf64File {
  if (data.length < EHDR_SIZE || !isElf(data)) {
    throw new ElfFormatError(`${what}: not an ELF file (${data.length} bytes, no \\x7fELF magic)`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const elfClass = data[4];
  if (elfClass === ELFCLASS32) {
    throw new ElfFormatError(`${what}: a 32-bit ELF (EI_CLASS=1); a 64-bit x86-64 kernel is needed`);
  }
  if (elfClass !== ELFCLASS64 || data[5] !== ELFDATA2LSB) {
    throw new ElfFormatError(`${what}: EI_CLASS=${elfClass} EI_DATA=${data[5]}; expected a little-endian ELF64 file`);
  }
  const machine = view.getUint16(18, true);
  const entry = u64(view, 24, "e_entry");
  const phoff = u64(view, 32, "e_phoff");
  const shoff = u64(view, 40, "e_shoff");
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  const shentsize = view.getUint16(58, true);
  const shnum = view.getUint16(60, true);
  const shstrndx = view.getUint16(62, true);
  const within = (offset: number, size: number) => offset <= data.length && size <= data.length - offset;

  const loadSegments: ElfSegment[] = [];
  if (phnum > 0) {
    if (phentsize < PHDR_SIZE || !within(phoff, phnum * phentsize)) {
      throw new ElfFormatError(`${what}: program headers (e_phoff ${phoff}, ${phnum} x ${phentsize} bytes) run past the end of the ${data.length}-byte file; is it truncated?`);
    }
    for (let i = 0; i < phnum; i++) {
      const at = phoff + i * phentsize;
      if (view.getUint32(at, true) !== PT_LOAD) continue;
      const segment = {
        fileOffset: u64(view, at + 8, "p_offset"),
        physicalAddress: u64(view, at + 24, "p_paddr"),
        fileSize: u64(view, at + 32, "p_filesz"),
        memorySize: u64(view, at + 40, "p_memsz"),
      };
      if (!within(segment.fileOffset, segment.fileSize)) {
        throw new ElfFormatError(`${what}: PT_LOAD segment ${i} (offset ${segment.fileOffset}, ${segment.fileSize} bytes) runs past the end of the ${data.length}-byte file; is it truncated?`);
      }
      if (segment.memorySize < segment.fileSize) {
        throw new ElfFormatError(`${what}: PT_LOAD segment ${i} has p_memsz ${segment.memorySize} < p_filesz ${segment.fileSize}`);
      }
      loadSegments.push(segment);
    }
  }

  const sections = (): ElfSection[] => {
    if (shnum === 0) return [];
    if (shentsize < SHDR_SIZE || !within(shoff, shnum * shentsize) || shstrndx >= shnum) {
      throw new ElfFormatError(`${what}: section headers (e_shoff ${shoff}, ${shnum} x ${shentsize} bytes) are outside the ${data.length}-byte file`);
    }
    const header = (i: number) => ({
      nameOffset: view.getUint32(shoff + i * shentsize, true),
      fileOffset: u64(view, shoff + i * shentsize + 24, "sh_offset"),
      size: u64(view, shoff + i * shentsize + 32, "sh_size"),
    });
    const names = header(shstrndx);
    if (!within(names.fileOffset, names.size)) throw new ElfFormatError(`${what}: section name table is outside the file`);
    const decoder = new TextDecoder();
    const result: ElfSection[] = [];
    for (let i = 0; i < shnum; i++) {
      const section = header(i);
      const start = names.fileOffset + section.nameOffset;
      let end = start;
      while (end < names.fileOffset + names.size && data[end] !== 0) end++;
      result.push({ name: decoder.decode(data.subarray(start, end)), fileOffset: section.fileOffset, size: section.size });
    }
    return result;
  };
  return { machine, entry, loadSegments, sections };
}
