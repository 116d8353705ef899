/*
 * Two vCPUs take turns reading the ACPI PM timer, handing the turn over through RAM, so
 * each read happens strictly after the previous one. The values are left at VALUES for the
 * host: a timer shared by the VM never runs backwards from one vCPU to the next.
 * arg (RDI): this vCPU's index, 0 or 1. vCPU 1 makes the last read and ends the VM.
 */
#include "kit.h"

#define TURN 0x90000
#define VALUES 0x90100
#define ROUNDS 64

void main(u64 vcpu) {
  volatile u32 *turn = (volatile u32 *)TURN;
  volatile u32 *values = (volatile u32 *)VALUES;
  for (u32 round = 0; round < ROUNDS; round++) {
    u32 step = round * 2 + (u32)vcpu;
    while (*turn != step) pause_cpu();
    values[step] = pm_timer();
    *turn = step + 1;
  }
  if (vcpu == 1) guest_exit(0);
  for (;;) __asm__ volatile("hlt");
}
