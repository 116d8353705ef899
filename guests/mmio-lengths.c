/*
 * Every MMIO access length a guest can cause: 1, 2, 4 and 8 bytes at every alignment
 * inside a page, and 2-, 4- and 8-byte accesses that cross a page at every split (KVM then
 * reports two accesses of the two parts' lengths, 1 to 7 bytes). Each case writes a value,
 * then reads the same bytes back. The cases and what was read are left in RAM at RESULTS
 * for the host to check against what the device saw.
 *
 * arg (RDI): the MMIO base of a device at least 16 pages long.
 */
#include "kit.h"

#define RESULTS 0x80000
#define PAGE 0x1000

struct access_case {
  u32 offset;
  u32 width;
  u64 written;
  u64 read;
};

static void store(u64 address, u32 width, u64 value) {
  switch (width) {
  case 1: __asm__ volatile("movb %b0, (%1)" : : "r"(value), "r"(address) : "memory"); break;
  case 2: __asm__ volatile("movw %w0, (%1)" : : "r"(value), "r"(address) : "memory"); break;
  case 4: __asm__ volatile("movl %k0, (%1)" : : "r"(value), "r"(address) : "memory"); break;
  default: __asm__ volatile("movq %0, (%1)" : : "r"(value), "r"(address) : "memory"); break;
  }
}

static u64 load(u64 address, u32 width) {
  u64 value = 0;
  switch (width) {
  case 1: __asm__ volatile("movzbl (%1), %k0" : "=r"(value) : "r"(address) : "memory"); break;
  case 2: __asm__ volatile("movzwl (%1), %k0" : "=r"(value) : "r"(address) : "memory"); break;
  case 4: __asm__ volatile("movl (%1), %k0" : "=r"(value) : "r"(address) : "memory"); break;
  default: __asm__ volatile("movq (%1), %0" : "=r"(value) : "r"(address) : "memory"); break;
  }
  return value;
}

static u32 count;

static void run_case(u64 base, u32 offset, u32 width) {
  volatile struct access_case *c = (volatile struct access_case *)RESULTS + 1 + count;
  /* Distinct bytes in every case, so a byte that lands in the wrong place shows. */
  u64 value = 0;
  for (u32 b = 0; b < 8; b++) value |= (u64)((count * 8 + b + 1) & 0xff) << (b * 8);
  c->offset = offset;
  c->width = width;
  c->written = value;
  store(base + offset, width, value);
  c->read = load(base + offset, width);
  count++;
  *(volatile u32 *)RESULTS = count;
}

void main(u64 base) {
  static const u32 widths[] = {1, 2, 4, 8};
  u32 slot = 0;
  /* In-page: each width at alignments 0..7, 16 bytes apart in page 0. */
  for (u32 w = 0; w < 4; w++)
    for (u32 align = 0; align < 8; align++) run_case(base, 0x100 + (slot++) * 16 + align, widths[w]);
  /* Page-crossing: one page boundary per case, so no two cases touch the same bytes. */
  u32 page = 1;
  for (u32 w = 1; w < 4; w++)
    for (u32 before = 1; before < widths[w]; before++) run_case(base, (page++) * PAGE - before, widths[w]);
  guest_exit(0);
}
