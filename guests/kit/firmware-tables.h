/*
 * Finding firmware tables the way an OS does: byte helpers, the ACPI RSDP scan of the BIOS
 * area (ACPI 5.2.5.1) and a table by signature through the RSDT, checksums checked.
 * Physical addresses are pointers: for guests running with paging off (multiboot kernels).
 */
#ifndef GUEST_FIRMWARE_TABLES_H
#define GUEST_FIRMWARE_TABLES_H

#include "kit.h"

static inline int bytes_sum_to_zero(const u8 *p, u32 length) {
  u8 sum = 0;
  for (u32 i = 0; i < length; i++) sum += p[i];
  return sum == 0;
}

static inline int has_signature(const u8 *p, const char *signature) {
  for (int i = 0; signature[i]; i++)
    if (p[i] != (u8)signature[i]) return 0;
  return 1;
}

static inline u32 le32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static inline u32 le16(const u8 *p) { return p[0] | p[1] << 8; }

/* The RSDP: "RSD PTR " on a 16-byte boundary in 0xE0000-0xFFFFF whose 20 bytes sum to 0. */
static inline const u8 *acpi_find_rsdp(void) {
  for (u32 at = 0xe0000; at < 0x100000; at += 16)
    if (has_signature((const u8 *)at, "RSD PTR ") && bytes_sum_to_zero((const u8 *)at, 20)) return (const u8 *)at;
  return 0;
}

/* The table the RSDT lists with `signature` and a valid checksum, or 0. */
static inline const u8 *acpi_find_table(const char *signature) {
  const u8 *rsdp = acpi_find_rsdp();
  if (!rsdp) return 0;
  const u8 *rsdt = (const u8 *)le32(rsdp + 16);
  if (!has_signature(rsdt, "RSDT") || !bytes_sum_to_zero(rsdt, le32(rsdt + 4))) return 0;
  for (u32 entry = 36; entry + 4 <= le32(rsdt + 4); entry += 4) {
    const u8 *table = (const u8 *)le32(rsdt + entry);
    if (has_signature(table, signature) && bytes_sum_to_zero(table, le32(table + 4))) return table;
  }
  return 0;
}

#endif
