/*
 * Resets the machine the way an ACPI OS does (Linux's acpi_reboot): find the FADT through
 * the RSDP and RSDT, and if it is revision 2 or later with RESET_REG_SUP, write RESET_VALUE
 * to the system I/O port RESET_REG names. Any step that does not hold ends the VM with its
 * own debug-exit status instead; status 0 means the reset write came back without resetting.
 */
#include "kit.h"
#include "firmware-tables.h"

enum { NO_FADT = 1, OLD_FADT, NO_RESET_REG, NOT_IO_PORT };

void main(u32 multiboot_info) {
  (void)multiboot_info;
  const u8 *fadt = acpi_find_table("FACP");
  if (!fadt) guest_exit(NO_FADT);
  if (fadt[8] < 2 || le32(fadt + 4) < 129) guest_exit(OLD_FADT);
  if ((le32(fadt + 112) & (1u << 10)) == 0) guest_exit(NO_RESET_REG);
  const u8 *reset_reg = fadt + 116;
  if (reset_reg[0] != 1 || le32(reset_reg + 8) != 0 || le32(reset_reg + 4) > 0xffff) guest_exit(NOT_IO_PORT);
  serial_puts("resetting through the FADT's reset register\n");
  outb((u16)le32(reset_reg + 4), fadt[128]);
  guest_exit(0);
}
