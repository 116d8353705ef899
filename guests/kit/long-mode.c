/*
 * The long-mode guest kit's CPL0 side, entered from long-mode-entry.S in 64-bit mode: the
 * GDT (kernel and user segments, the 64-bit TSS), the TSS with RSP0 and the I/O permission
 * bitmap, the IDT, the trap handler behind every vector (and the kit's system calls), and
 * the drop to CPL3.
 */
#include "kit.h"

#define KERNEL_CODE 0x08
#define TSS_SELECTOR 0x28
#define TSS_IO_BITMAP_BYTES (65536 / 8)
#define UNEXPECTED_EXCEPTION_STATUS 0xfd

/* Null, kernel code (64-bit), kernel data, user data, user code (64-bit), TSS (two slots). */
static u64 kit_gdt[7] __attribute__((aligned(16))) = {
  0, 0x00af9a000000ffffull, 0x00cf92000000ffffull, 0x00cff2000000ffffull, 0x00affa000000ffffull, 0, 0,
};
/* Read by LGDT in 32-bit mode too: there it takes the limit and the low half of the base. */
struct descriptor_pointer { u16 limit; u64 base; } __attribute__((packed));
const struct descriptor_pointer kit_gdt_pointer = {sizeof kit_gdt - 1, (u64)kit_gdt};

/* Intel SDM vol. 3, 8.7: the I/O bitmap follows the 104-byte TSS, and one 0xff byte ends it. */
static struct {
  u32 reserved0;
  u64 rsp[3];
  u64 reserved1;
  u64 ist[7];
  u64 reserved2;
  u16 reserved3;
  u16 io_bitmap_base;
  u8 io_bitmap[TSS_IO_BITMAP_BYTES + 1];
} __attribute__((packed, aligned(16))) kit_tss;

struct idt_gate64 { u16 offset_low, selector; u8 ist, type; u16 offset_middle; u32 offset_high, reserved; } __attribute__((packed));
static struct idt_gate64 kit_idt64[256] __attribute__((aligned(16)));
extern const u8 kit_trap_stubs[]; /* 16 bytes per vector */

static u8 kit_kernel_stack[16384] __attribute__((aligned(16)));
static u8 kit_user_stack[65536] __attribute__((aligned(16)));

volatile struct kit_fault kit_last_fault;
volatile u64 kit_fault_resume;
volatile u64 kit_interrupted_cs;

/* What long-mode-entry.S pushes (general registers, vector, error code) and the CPU's frame. */
struct kit_trap_frame {
  u64 r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rbx, rdx, rcx, rax;
  u64 vector, error;
  u64 rip, cs, rflags, rsp, ss;
};

void kit_iret_to_user(void (*fn)(u64), u64 arg, u64 stack_top);
void kit_start64(u32 multiboot_info);
void kit_trap(struct kit_trap_frame *frame);

#define VECTOR_INVALID_OPCODE 6
#define RFLAGS_IF 0x200u
#define UD2_LOW 0x0f
#define UD2_HIGH 0x0b

/* Programs that take interrupts define it (see interrupts.h); called with interrupts off. */
__attribute__((weak)) void kit_interrupt(void) {
  serial_puts("kit: an interrupt arrived and the program has no kit_interrupt\n");
  guest_exit(UNEXPECTED_EXCEPTION_STATUS);
}

void kit_allow_ports(u16 first, u16 count) {
  for (u32 port = first; port < (u32)first + count && port < 65536; port++) kit_tss.io_bitmap[port >> 3] &= (u8)~(1u << (port & 7));
}

/* A present 64-bit interrupt gate, DPL0: CPL3 reaches CPL0 only through exceptions and interrupts. */
static void set_gate(u32 vector, u64 handler) {
  kit_idt64[vector] = (struct idt_gate64){(u16)handler, KERNEL_CODE, 0, 0x8e, (u16)(handler >> 16), (u32)(handler >> 32), 0};
}

#if KIT_CPL == 3
static void main_at_cpl3(u64 multiboot_info) { main((u32)multiboot_info); }
#endif

void kit_start64(u32 multiboot_info) {
  kit_tss.rsp[0] = (u64)(kit_kernel_stack + sizeof kit_kernel_stack);
  kit_tss.io_bitmap_base = (u16)((u64)kit_tss.io_bitmap - (u64)&kit_tss);
  for (u32 i = 0; i < sizeof kit_tss.io_bitmap; i++) kit_tss.io_bitmap[i] = 0xff;
  kit_allow_ports(COM1, 8);
  kit_allow_ports(DEBUG_EXIT_PORT, 4);
  kit_allow_ports(0x20, 2); /* the 8259s, which interrupts_init masks */
  kit_allow_ports(0xa0, 2);
  kit_allow_ports(PM_TIMER_PORT, 4);

  u64 base = (u64)&kit_tss, limit = sizeof kit_tss - 1;
  kit_gdt[5] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 | ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
  kit_gdt[6] = base >> 32;
  __asm__ volatile("ltr %w0" : : "r"(TSS_SELECTOR));

  for (u32 v = 0; v < 256; v++) set_gate(v, (u64)(kit_trap_stubs + 16 * v));
  struct descriptor_pointer idtr = {sizeof kit_idt64 - 1, (u64)kit_idt64};
  __asm__ volatile("lidt %0" : : "m"(idtr));

#if KIT_CPL == 3
  kit_enter_user(main_at_cpl3, multiboot_info);
#else
  main(multiboot_info);
#endif
}

void kit_enter_user(void (*fn)(u64), u64 arg) {
  kit_iret_to_user(fn, arg, (u64)(kit_user_stack + sizeof kit_user_stack));
  __builtin_unreachable();
}

static void serial_put_hex64(u64 value) {
  serial_put_hex((u32)(value >> 32), 8);
  serial_put_hex((u32)value, 8);
}

/* A UD2 at CPL3 is the kit's system call (long-mode.h): RAX the operation, RDI and RSI its arguments. */
static int is_syscall(const struct kit_trap_frame *frame) {
  const u8 *at = (const u8 *)frame->rip;
  return frame->vector == VECTOR_INVALID_OPCODE && (frame->cs & 3) == 3 && at[0] == UD2_LOW && at[1] == UD2_HIGH;
}

static void syscall(struct kit_trap_frame *frame) {
  frame->rip += 2;
  if (frame->rax == KIT_SYS_INTERRUPTS_ON) frame->rflags |= RFLAGS_IF;
  else if (frame->rax == KIT_SYS_INTERRUPTS_OFF) frame->rflags &= ~(u64)RFLAGS_IF;
  else if (frame->rax == KIT_SYS_CALL) frame->rax = ((u64 (*)(u64))frame->rdi)(frame->rsi);
  else {
    serial_puts("kit: unknown system call ");
    serial_put_decimal((u32)frame->rax);
    serial_putc('\n');
    guest_exit(UNEXPECTED_EXCEPTION_STATUS);
  }
}

void kit_trap(struct kit_trap_frame *frame) {
  if (is_syscall(frame)) {
    syscall(frame);
    return;
  }
  if (frame->vector >= 32) {
    kit_interrupted_cs = frame->cs;
    kit_interrupt();
    return;
  }
  if (kit_fault_resume != 0) {
    kit_last_fault.vector = frame->vector;
    kit_last_fault.error = frame->error;
    frame->rip = kit_fault_resume;
    kit_fault_resume = 0;
    return;
  }
  serial_puts("kit: unexpected exception ");
  serial_put_decimal((u32)frame->vector);
  serial_puts(" error ");
  serial_put_hex64(frame->error);
  serial_puts(" at rip ");
  serial_put_hex64(frame->rip);
  serial_puts(" cs ");
  serial_put_hex((u32)frame->cs, 4);
  serial_putc('\n');
  guest_exit(UNEXPECTED_EXCEPTION_STATUS);
}
