/*
 * Suspends to RAM the way an ACPI OS does and checks the resume. It finds the FADT, the
 * FACS and, in the DSDT's AML, the \_S3_ package's SLP_TYPa; puts a real-mode resume
 * routine at RESUME and its address in the FACS firmware waking vector (or 0 with
 * -DNO_VECTOR); enables the RTC alarm as a wake event (PM1_EN.RTC_EN; left off with
 * -DNO_WAKE) for the next second; leaves MARKER in RAM; and writes SLP_TYP | SLP_EN.
 *
 * The resume routine runs in real mode and exits with status bit 0 = PM1_STS.RTC_STS, bit 1
 * = PM1_STS.WAK_STS, bit 2 = MARKER still in RAM: 7 says "woken, by the RTC, RAM kept" (and
 * fits QEMU's 7-bit isa-debug-exit status too). Had the CPU run on past the sleep request,
 * the loop below would have overwritten MARKER.
 */
#include "kit.h"
#include "firmware-tables.h"

#define RESUME 0x8000
#define MARKER 0x7000
#define RTC_INDEX 0x70
#define RTC_DATA 0x71

enum { NO_TABLES = 1, NO_S3_PACKAGE, UNEXPECTED_RETURN };

extern const u8 resume_start[], resume_end[];
__asm__(
    ".globl resume_start, resume_end\n"
    ".code16\n"
    "resume_start:\n"
    "  mov $0x600, %dx\n" /* PM1_STS */
    "  in %dx, %ax\n"
    "  xor %bx, %bx\n"
    "  mov %bx, %ds\n"
    "  mov %ax, %cx\n"
    "  shr $10, %cx\n"
    "  and $1, %cx\n" /* RTC_STS -> bit 0 */
    "  shr $14, %ax\n"
    "  and $2, %ax\n" /* WAK_STS -> bit 1 */
    "  or %cx, %ax\n"
    "  cmpb $0x5a, (0x7000)\n" /* MARKER kept -> bit 2 */
    "  jne 2f\n"
    "  or $4, %ax\n"
    "2: movzwl %ax, %eax\n"
    "  out %eax, $0xf4\n"
    "1: hlt\n"
    "  jmp 1b\n"
    "resume_end:\n"
    ".code32\n");

static u8 rtc_read(u8 index) {
  outb(RTC_INDEX, index);
  return inb(RTC_DATA);
}

static void rtc_write(u8 index, u8 value) {
  outb(RTC_INDEX, index);
  outb(RTC_DATA, value);
}

/* SLP_TYPa from the DSDT's "Name (\_S3_, Package () { a, b, ... })", or -1. */
static int s3_sleep_type(const u8 *dsdt) {
  u32 length = le32(dsdt + 4);
  for (u32 i = 36; i + 9 < length; i++) {
    const u8 *p = dsdt + i;
    if (!has_signature(p, "_S3_") || p[4] != 0x12 /* PackageOp */ || (p[5] & 0xc0) != 0) continue;
    const u8 *element = p + 7; /* past the one-byte PkgLength and NumElements */
    if (element[0] == 0x00 || element[0] == 0x01) return element[0];
    if (element[0] == 0x0a) return element[1];
  }
  return -1;
}

void main(u32 multiboot_info) {
  (void)multiboot_info;
  const u8 *fadt = acpi_find_table("FACP");
  if (!fadt) guest_exit(NO_TABLES);
  u8 *facs = (u8 *)le32(fadt + 36);
  const u8 *dsdt = (const u8 *)le32(fadt + 40);
  u16 pm1a_evt = (u16)le32(fadt + 56), pm1a_cnt = (u16)le32(fadt + 64);
  if (!has_signature(facs, "FACS") || !has_signature(dsdt, "DSDT")) guest_exit(NO_TABLES);
  int sleep_type = s3_sleep_type(dsdt);
  if (sleep_type < 0) guest_exit(NO_S3_PACKAGE);

  u8 *resume = (u8 *)RESUME;
  for (const u8 *p = resume_start; p < resume_end; p++) *resume++ = *p;
#ifdef NO_VECTOR
  *(volatile u32 *)(facs + 12) = 0;
#else
  *(volatile u32 *)(facs + 12) = RESUME;
#endif
#ifdef NO_WAKE
  outw(pm1a_evt + 2, 0); /* PM1_EN: no wake event */
#else
  outw(pm1a_evt + 2, 1 << 10); /* PM1_EN.RTC_EN */
#endif
  /* The alarm matches every second ("don't care" in all three), enabled by register B's AIE. */
  rtc_write(0x01, 0xc0);
  rtc_write(0x03, 0xc0);
  rtc_write(0x05, 0xc0);
  rtc_write(0x0b, rtc_read(0x0b) | 0x20);

  volatile u8 *marker = (volatile u8 *)MARKER;
  *marker = 0x5a;
  serial_puts("sleeping\n");
  outw(pm1a_cnt, (u16)(sleep_type << 10 | 1 << 13));
  for (;;) *marker = 0;
}
