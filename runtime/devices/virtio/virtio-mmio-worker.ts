/**
 * Worker-local factory (vCPU workers) for a virtio-mmio transport placed on a device worker:
 * reads are answered from the register file in `shared`; InterruptACK is applied in place
 * when the line is a resampling irqfd; every other write goes to the device worker through
 * the write mailbox and is applied there before the vCPU goes on. No main-thread trip.
 */
import type { AccessSize, Device, HighWord } from "../device.js";
import { toUnsigned } from "../device.js";
import { VirtioMmio, VirtioMmioRegisters, Word } from "./virtio-mmio-registers.js";
import { VirtioWriteMailbox } from "./virtio-write-mailbox.js";

export default function createVirtioMmioRegisters(shared: SharedArrayBuffer): Device {
  const registers = new VirtioMmioRegisters(shared);
  const mailbox = new VirtioWriteMailbox(registers.mailboxWords());
  return {
    name: "virtio-mmio registers",
    read: (offset: number, size: AccessSize, wide: HighWord) => registers.read(offset, size, wide),
    write(offset: number, size: AccessSize, value: number, high: number) {
      if (offset === VirtioMmio.InterruptACK && size === 4 && registers.get(Word.AckInPlace) === 1) {
        registers.acknowledgeInterrupt(toUnsigned(value, 4));
        return;
      }
      // Includes a QueueNotify that matched no ioeventfd (the transport counts it as an exit).
      mailbox.write(offset, size, value, high);
    },
  };
}
