/*
 * Reads the hypervisor CPUID range back and prints it on COM1, one line per leaf:
 *   cpuid LEAF: EAX EBX ECX EDX      (hex)
 * for leaf 1, 0x40000000, 0x40000001, 0x40000010 and, when 0x40000000 names a highest
 * hypervisor leaf above those, that leaf too. Then it writes 0 to KVM's kvmclock MSRs and
 * reports whether each write raised #GP, which is how a withheld paravirtual feature looks:
 *   msr INDEX: ok|gp
 * Last it counts TSC ticks across 100 ms of the ACPI PM timer (3.579545 MHz, port 0x608 on
 * the PC machine), so the caller can compare the TSC rate with what 0x40000010 claims:
 *   timing TSC-TICKS PM-TICKS         (hex, 64 and 32 bits)
 * and writes 0 to the debug-exit port.
 * A Multiboot v1 kernel: 32-bit protected mode, with its own GDT and an IDT for #GP.
 */
#define MULTIBOOT_MAGIC 0x1BADB002u
#define MULTIBOOT_FLAGS 0x00000003u /* page-align modules, give memory info */
#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define PM_TIMER_PORT 0x608
#define PM_TIMER_MASK 0xffffffu
#define PM_TICKS_100MS 357955u
/* A sample counts only if reading the PM timer took less than this many TSC ticks. */
#define MAX_SAMPLE_TSC_TICKS 2000000u

__attribute__((section(".multiboot"), used, aligned(4)))
static const unsigned int multiboot_header[3] = {
	MULTIBOOT_MAGIC, MULTIBOOT_FLAGS, -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS),
};

unsigned char probe_stack[4096] __attribute__((aligned(16)));

struct descriptor_pointer {
	unsigned short limit;
	unsigned int base;
} __attribute__((packed));

/* Null, flat 4 GiB code (0x08), flat 4 GiB data (0x10). */
static const unsigned long long gdt[3] __attribute__((aligned(8))) = {
	0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull,
};
static unsigned long long idt[32] __attribute__((aligned(8)));
/* Set by the #GP handler, which also steps over the 2-byte WRMSR that faulted. */
volatile unsigned int general_protection_faults;
void general_protection_handler(void);

static inline void outb(unsigned short port, unsigned char value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline unsigned int inl(unsigned short port)
{
	unsigned int value;

	__asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static inline unsigned long long rdtsc(void)
{
	unsigned int low, high;

	__asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
	return ((unsigned long long)high << 32) | low;
}

static void put_char(char c)
{
	outb(COM1, (unsigned char)c);
}

static void put_string(const char *s)
{
	while (*s)
		put_char(*s++);
}

static void put_hex(unsigned int value)
{
	for (int shift = 28; shift >= 0; shift -= 4)
		put_char("0123456789abcdef"[(value >> shift) & 0xf]);
}

static void print_leaf(unsigned int leaf)
{
	unsigned int a, b, c, d;

	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(0));
	put_string("cpuid ");
	put_hex(leaf);
	put_string(":");
	unsigned int regs[4] = { a, b, c, d };
	for (int i = 0; i < 4; i++) {
		put_char(' ');
		put_hex(regs[i]);
	}
	put_char('\n');
}

static void load_descriptor_tables(void)
{
	struct descriptor_pointer gdtr = { sizeof(gdt) - 1, (unsigned int)gdt };
	struct descriptor_pointer idtr = { sizeof(idt) - 1, (unsigned int)idt };
	unsigned int handler = (unsigned int)general_protection_handler;

	/* A 32-bit interrupt gate: selector 0x08, present, DPL 0, type 0xe. */
	idt[13] = (handler & 0xffff) | (0x08ull << 16) | (0x8e00ull << 32) | ((unsigned long long)(handler >> 16) << 48);
	__asm__ volatile("lgdt %0\n\t"
			 "ljmp $0x08, $1f\n"
			 "1:\n\t"
			 "mov $0x10, %%ax\n\t"
			 "mov %%ax, %%ds\n\t"
			 "mov %%ax, %%es\n\t"
			 "mov %%ax, %%ss\n\t"
			 "lidt %1"
			 : : "m"(gdtr), "m"(idtr) : "eax", "memory");
}

static void probe_msr(unsigned int index)
{
	unsigned int faults = general_protection_faults;

	__asm__ volatile("wrmsr" : : "c"(index), "a"(0), "d"(0) : "memory");
	put_string("msr ");
	put_hex(index);
	put_string(general_protection_faults != faults ? ": gp\n" : ": ok\n");
}

/*
 * One PM timer reading and the TSC at that moment: the PM read is bracketed by two TSC
 * reads, and retried while the bracket is wide (the vCPU was descheduled or the exit was
 * slow), so the error stays far below the 100 ms window whatever the host's load.
 */
static void sample(unsigned int *pm, unsigned long long *tsc)
{
	for (int attempt = 0; attempt < 1000; attempt++) {
		unsigned long long before = rdtsc();
		unsigned int value = inl(PM_TIMER_PORT) & PM_TIMER_MASK;
		unsigned long long after = rdtsc();

		*pm = value;
		*tsc = before + (after - before) / 2;
		if (after - before < MAX_SAMPLE_TSC_TICKS)
			return;
	}
}

static void measure_tsc(void)
{
	unsigned int pm_start, pm_end;
	unsigned long long tsc_start, tsc_end;

	sample(&pm_start, &tsc_start);
	do
		sample(&pm_end, &tsc_end);
	while (((pm_end - pm_start) & PM_TIMER_MASK) < PM_TICKS_100MS);
	put_string("timing ");
	put_hex((unsigned int)((tsc_end - tsc_start) >> 32));
	put_hex((unsigned int)(tsc_end - tsc_start));
	put_char(' ');
	put_hex((pm_end - pm_start) & PM_TIMER_MASK);
	put_char('\n');
}

void probe_main(void)
{
	unsigned int highest, ignored_b, ignored_c, ignored_d;

	print_leaf(0x1);
	print_leaf(0x40000000);
	print_leaf(0x40000001);
	print_leaf(0x40000010);
	__asm__ volatile("cpuid" : "=a"(highest), "=b"(ignored_b), "=c"(ignored_c), "=d"(ignored_d)
			 : "a"(0x40000000), "c"(0));
	if (highest > 0x40000010 && highest <= 0x400000ff)
		print_leaf(highest);
	load_descriptor_tables();
	probe_msr(0x11);       /* MSR_KVM_SYSTEM_TIME: KVM_FEATURE_CLOCKSOURCE */
	probe_msr(0x4b564d01); /* MSR_KVM_SYSTEM_TIME_NEW: KVM_FEATURE_CLOCKSOURCE2 */
	measure_tsc();
	put_string("done\n");
	outb(DEBUG_EXIT_PORT, 0);
	for (;;)
		__asm__ volatile("hlt");
}

/* The loader leaves no usable stack: set one, then run in C. */
__asm__(".text\n"
	".globl _start\n"
	"_start:\n\t"
	"movl $(probe_stack + 4096), %esp\n\t"
	"call probe_main\n"
	/*
	 * #GP at CPL0 pushes EFLAGS, CS, EIP and an error code. Drop the error code, step EIP
	 * over the WRMSR, restore EFLAGS and return without IRET: PVM cannot emulate IRET at
	 * CPL0 (a KVM internal error), and same-privilege returns need no more than this.
	 */
	".globl general_protection_handler\n"
	"general_protection_handler:\n\t"
	"addl $4, %esp\n\t"
	"addl $2, (%esp)\n\t"
	"incl general_protection_faults\n\t"
	"pushl 8(%esp)\n\t"
	"popfl\n\t"
	"ret $8\n");
