/*
 * Finds the MultiProcessor Specification 1.4 tables the way an OS does (MPS 4: "_MP_" on a
 * 16-byte boundary in the first KiB of the EBDA, the last KiB of base memory, or the BIOS
 * ROM area), checks both checksums, walks the configuration table's entries and reports
 * what it found on COM1: "cpus=N bsp=N ioapic=0x... isa-irq0-pin=N". Exits 0 when the table
 * holds CPUS enabled processors and an IOAPIC at 0xFEC00000, else the step that failed.
 */
#include "kit.h"
#include "firmware-tables.h"

#ifndef CPUS
#error "build with -DCPUS=<expected processor count>"
#endif

enum { NO_FLOATING_POINTER = 1, BAD_TABLE, BAD_ENTRY, WRONG_CPUS, WRONG_IOAPIC };

static const u8 *scan(u32 start, u32 length) {
  for (u32 at = start; at + 16 <= start + length; at += 16) {
    const u8 *p = (const u8 *)at;
    if (p[0] == '_' && p[1] == 'M' && p[2] == 'P' && p[3] == '_' && p[8] == 1 && bytes_sum_to_zero(p, 16)) return p;
  }
  return 0;
}

static void put_hex(u32 v) {
  serial_puts("0x");
  for (int shift = 28; shift >= 0; shift -= 4) serial_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

void main(u32 multiboot_info) {
  (void)multiboot_info;
  u32 ebda_pointer = 0x40e; /* the BIOS data area word holding the EBDA segment */
  __asm__("" : "+r"(ebda_pointer)); /* a computed address: GCC warns about small constant ones */
  u32 ebda = (u32)(*(volatile u16 *)ebda_pointer) << 4;
  const u8 *mp = ebda ? scan(ebda, 1024) : 0;
  if (!mp) mp = scan(639 * 1024, 1024);
  if (!mp) mp = scan(0xf0000, 0x10000);
  if (!mp) guest_exit(NO_FLOATING_POINTER);
  const u8 *table = (const u8 *)le32(mp + 4);
  if (!table || table[0] != 'P' || table[1] != 'C' || table[2] != 'M' || table[3] != 'P' || table[6] != 4 ||
      !bytes_sum_to_zero(table, le16(table + 4)))
    guest_exit(BAD_TABLE);
  u32 cpus = 0, bsp = 0xff, ioapic = 0, irq0_pin = 0xff;
  const u8 *entry = table + 44, *end = table + le16(table + 4);
  for (u32 i = 0; i < le16(table + 34); i++) {
    if (entry >= end) guest_exit(BAD_ENTRY);
    switch (entry[0]) {
    case 0: /* processor */
      if (entry[3] & 1) cpus++;
      if (entry[3] & 2) bsp = entry[1];
      entry += 20;
      break;
    case 2: /* I/O APIC */
      if (entry[3] & 1) ioapic = le32(entry + 4);
      entry += 8;
      break;
    case 3: /* I/O interrupt: ISA bus (ID 1 here) IRQ 0 */
      if (entry[1] == 0 && entry[4] == 1 && entry[5] == 0) irq0_pin = entry[7];
      entry += 8;
      break;
    case 1: case 4:
      entry += 8;
      break;
    default:
      guest_exit(BAD_ENTRY);
    }
  }
  serial_puts("cpus=");
  serial_put_decimal(cpus);
  serial_puts(" bsp=");
  serial_put_decimal(bsp);
  serial_puts(" ioapic=");
  put_hex(ioapic);
  serial_puts(" isa-irq0-pin=");
  serial_put_decimal(irq0_pin);
  serial_puts("\n");
  if (cpus != CPUS) guest_exit(WRONG_CPUS);
  if (ioapic != 0xfec00000u) guest_exit(WRONG_IOAPIC);
  guest_exit(0);
}
