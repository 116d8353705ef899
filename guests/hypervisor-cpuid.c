/*
 * Reads the hypervisor CPUID range back and prints it on COM1, one line per leaf:
 *   cpuid LEAF: EAX EBX ECX EDX      (hex)
 * for leaf 1, 0x40000000, 0x40000001, 0x40000010 and, when 0x40000000 names a highest
 * hypervisor leaf above those, that leaf too. Then it writes 0 to the debug-exit port.
 * A Multiboot v1 kernel: runs in 32-bit protected mode straight from the loader.
 */
#define MULTIBOOT_MAGIC 0x1BADB002u
#define MULTIBOOT_FLAGS 0x00000003u /* page-align modules, give memory info */
#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4

__attribute__((section(".multiboot"), used, aligned(4)))
static const unsigned int multiboot_header[3] = {
	MULTIBOOT_MAGIC, MULTIBOOT_FLAGS, -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS),
};

unsigned char probe_stack[4096] __attribute__((aligned(16)));

static inline void outb(unsigned short port, unsigned char value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
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
	"call probe_main\n");
