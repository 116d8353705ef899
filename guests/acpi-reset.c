/*
 * Resets the machine the way an ACPI OS does (Linux's acpi_reboot): find the RSDP in the
 * BIOS area, follow the RSDT to the FADT, and if it is revision 2 or later with
 * RESET_REG_SUP, write RESET_VALUE to the system I/O port RESET_REG names. Any step that
 * does not hold ends the VM with its own debug-exit status instead; status 0 means the
 * reset write came back without resetting.
 */
#include "kit.h"

enum { NO_RSDP = 1, BAD_RSDT, NO_FADT, OLD_FADT, NO_RESET_REG, NOT_IO_PORT };

static int sums_to_zero(const u8 *p, u32 length) {
  u8 sum = 0;
  for (u32 i = 0; i < length; i++) sum += p[i];
  return sum == 0;
}

static int is(const u8 *p, const char *signature) {
  for (int i = 0; signature[i]; i++)
    if (p[i] != (u8)signature[i]) return 0;
  return 1;
}

static u32 u32_at(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }

void main(u32 multiboot_info) {
  (void)multiboot_info;
  const u8 *rsdp = 0;
  for (u32 at = 0xe0000; at < 0x100000 && !rsdp; at += 16)
    if (is((const u8 *)at, "RSD PTR ") && sums_to_zero((const u8 *)at, 20)) rsdp = (const u8 *)at;
  if (!rsdp) guest_exit(NO_RSDP);
  const u8 *rsdt = (const u8 *)u32_at(rsdp + 16);
  if (!is(rsdt, "RSDT") || !sums_to_zero(rsdt, u32_at(rsdt + 4))) guest_exit(BAD_RSDT);
  const u8 *fadt = 0;
  for (u32 entry = 36; entry < u32_at(rsdt + 4); entry += 4) {
    const u8 *table = (const u8 *)u32_at(rsdt + entry);
    if (is(table, "FACP") && sums_to_zero(table, u32_at(table + 4))) fadt = table;
  }
  if (!fadt) guest_exit(NO_FADT);
  if (fadt[8] < 2 || u32_at(fadt + 4) < 129) guest_exit(OLD_FADT);
  if ((u32_at(fadt + 112) & (1u << 10)) == 0) guest_exit(NO_RESET_REG);
  const u8 *reset_reg = fadt + 116;
  if (reset_reg[0] != 1 || u32_at(reset_reg + 8) != 0 || u32_at(reset_reg + 4) > 0xffff) guest_exit(NOT_IO_PORT);
  serial_puts("resetting through the FADT's reset register\n");
  outb((u16)u32_at(reset_reg + 4), fadt[128]);
  guest_exit(0);
}
