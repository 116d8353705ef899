/*
 * Suspends to RAM the way an ACPI OS does and checks the resume. It finds the FADT, the
 * FACS and, in the DSDT's AML, the \_S3_ package's SLP_TYPa; puts a real-mode resume
 * routine at RESUME and its address in the FACS firmware waking vector (or 0 with
 * -DNO_VECTOR); enables the RTC alarm as a wake event (PM1_EN.RTC_EN; left off with
 * -DNO_WAKE) for the next second; leaves MARKER in RAM; and writes SLP_TYP | SLP_EN.
 *
 * The resume routine runs in real mode: it exits with status PM1_STS | MARKER's byte, so
 * 0x845a says "woken (WAK_STS), by the RTC (RTC_STS), RAM kept". Had the CPU run on past
 * the sleep request, the loop below would overwrite MARKER first.
 */
#include "kit.h"

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
    "  mov $0x600, %dx\n"      /* PM1_STS */
    "  in %dx, %ax\n"
    "  xor %bx, %bx\n"
    "  mov %bx, %ds\n"
    "  orb (" "0x7000" "), %al\n" /* MARKER */
    "  movzwl %ax, %eax\n"
    "  out %eax, $0xf4\n"
    "1: hlt\n"
    "  jmp 1b\n"
    "resume_end:\n"
    ".code32\n");

static int is(const u8 *p, const char *signature) {
  for (int i = 0; signature[i]; i++)
    if (p[i] != (u8)signature[i]) return 0;
  return 1;
}

static u32 u32_at(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }

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
  u32 length = u32_at(dsdt + 4);
  for (u32 i = 36; i + 9 < length; i++) {
    const u8 *p = dsdt + i;
    if (!is(p, "_S3_") || p[4] != 0x12 /* PackageOp */ || (p[5] & 0xc0) != 0) continue;
    const u8 *element = p + 7; /* past the one-byte PkgLength and NumElements */
    if (element[0] == 0x00 || element[0] == 0x01) return element[0];
    if (element[0] == 0x0a) return element[1];
  }
  return -1;
}

void main(u32 multiboot_info) {
  (void)multiboot_info;
  const u8 *rsdp = 0;
  for (u32 at = 0xe0000; at < 0x100000 && !rsdp; at += 16)
    if (is((const u8 *)at, "RSD PTR ")) rsdp = (const u8 *)at;
  if (!rsdp) guest_exit(NO_TABLES);
  const u8 *rsdt = (const u8 *)u32_at(rsdp + 16), *fadt = 0;
  for (u32 entry = 36; entry < u32_at(rsdt + 4); entry += 4)
    if (is((const u8 *)u32_at(rsdt + entry), "FACP")) fadt = (const u8 *)u32_at(rsdt + entry);
  if (!fadt) guest_exit(NO_TABLES);
  u8 *facs = (u8 *)u32_at(fadt + 36);
  const u8 *dsdt = (const u8 *)u32_at(fadt + 40);
  u16 pm1a_evt = (u16)u32_at(fadt + 56), pm1a_cnt = (u16)u32_at(fadt + 64);
  if (!is(facs, "FACS") || !is(dsdt, "DSDT")) guest_exit(NO_TABLES);
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
