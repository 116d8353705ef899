/*
 * The long-mode guest kit's entry: a Multiboot v1 kernel entered in 32-bit protected mode
 * (EBX = info) that identity-maps the first 4 GiB (2 MiB pages, user-accessible so CPL3
 * code can reach RAM and MMIO), enables PAE and long mode, loads the kit's GDT and jumps to
 * 64-bit code, which calls kit_start64 (long-mode.c) with the info pointer. Also the IRETQ
 * to CPL3 and the 256 interrupt stubs, which all run kit_trap (which is also the way back
 * from CPL3: see kit_syscall in long-mode.h).
 * Built -m64 and converted to ELF32 (objcopy -O elf32-i386): QEMU refuses ELF64 kernels.
 */
#define MULTIBOOT_MAGIC 0x1badb002
#define KERNEL_CODE 0x08
#define KERNEL_DATA 0x10
#define USER_DATA (0x18 | 3)
#define USER_CODE (0x20 | 3)
#define PAGE_FLAGS 0x7 /* present, writable, user */
#define PAGE_HUGE 0x80
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

	.section .multiboot, "a"
	.balign 4
	.long MULTIBOOT_MAGIC, 0, -MULTIBOOT_MAGIC

	.section .bss
	.balign 4096
	.globl kit_pml4
kit_pml4:	.skip 4096
kit_pdpt:	.skip 4096
kit_page_directories:	.skip 4 * 4096
	.balign 16
kit_boot_stack:	.skip 16384
	.globl kit_boot_stack_top
kit_boot_stack_top:

	.section .text.entry, "ax"
	.code32
	.globl _start
_start:
	mov %ebx, %esi
	mov $kit_boot_stack_top, %esp
	/* PML4[0] -> PDPT, PDPT[0..3] -> four page directories, 2048 2 MiB pages; the loader
	   zeroed .bss, so the entries' upper halves and the rest of the tables are 0. */
	movl $kit_pdpt + PAGE_FLAGS, kit_pml4
	mov $kit_page_directories + PAGE_FLAGS, %eax
	xor %ecx, %ecx
1:	mov %eax, kit_pdpt(, %ecx, 8)
	add $4096, %eax
	inc %ecx
	cmp $4, %ecx
	jne 1b
	mov $PAGE_FLAGS | PAGE_HUGE, %eax
	xor %ecx, %ecx
2:	mov %eax, kit_page_directories(, %ecx, 8)
	add $0x200000, %eax
	inc %ecx
	cmp $2048, %ecx
	jne 2b
	mov $kit_pml4, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	or $CR0_PG, %eax
	mov %eax, %cr0
	lgdt kit_gdt_pointer
	ljmp $KERNEL_CODE, $3f

	.code64
3:	mov $KERNEL_DATA, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov %esi, %edi /* zero-extends: the upper halves are undefined after the switch */
	call kit_start64
4:	mov $0xff, %eax
	out %eax, $0xf4
	hlt
	jmp 4b

/* void kit_iret_to_user(void (*fn)(u64), u64 arg, u64 stack_top): IRETQ to fn at CPL3, IF clear. */
	.text
	.globl kit_iret_to_user
kit_iret_to_user:
	mov $USER_DATA, %ax
	mov %ax, %ds
	mov %ax, %es
	lea -8(%rdx), %rax
	movq $kit_user_returned, (%rax) /* fn's return address */
	pushq $USER_DATA
	pushq %rax
	pushq $2
	pushq $USER_CODE
	pushq %rdi
	mov %rsi, %rdi
	iretq

/* Where a function entered at CPL3 returns to: the VM ends with 0xff, as after main. */
kit_user_returned:
	mov $0xff, %eax
	out %eax, $0xf4
5:	pause
	jmp 5b

/*
 * One 16-byte stub per vector: a zero where the CPU pushes no error code, then the vector.
 * Vectors with an error code (Intel SDM vol. 3, 6.13): 8, 10-14, 17, 21, 29, 30.
 */
.macro kit_stub vector
	.balign 16
	.if !(\vector == 8 || (\vector >= 10 && \vector <= 14) || \vector == 17 || \vector == 21 || \vector == 29 || \vector == 30)
	pushq $0
	.endif
	pushq $\vector
	jmp kit_trap_common
.endm

	.balign 16
	.globl kit_trap_stubs
kit_trap_stubs:
	.altmacro
	.set vector, 0
	.rept 256
	kit_stub %vector
	.set vector, vector + 1
	.endr
	.noaltmacro

/* The frame is struct kit_trap_frame (long-mode.c); the CPU aligned RSP to 16 before it. */
kit_trap_common:
	push %rax
	push %rcx
	push %rdx
	push %rbx
	push %rbp
	push %rsi
	push %rdi
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	cld
	mov %rsp, %rdi
	call kit_trap
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	pop %rsi
	pop %rbp
	pop %rbx
	pop %rdx
	pop %rcx
	pop %rax
	add $16, %rsp /* vector, error code */
	iretq

	.section .note.GNU-stack, "", @progbits
