/**
 * The naive reference path's vCPU thread: attaches to a vCPU the main thread created and
 * sends every exit to the main thread with postMessage, then awaits the reply message
 * before re-entering the guest. No SAB channel, no spinning: what a straightforward
 * worker-thread VMM would do, and what the exit channel is measured against.
 * Markers are timestamped here, on the vCPU thread, as on every other path.
 */
import { parentPort, workerData } from "node:worker_threads";
import { attachVcpu } from "../runtime/hypervisor/backends.js";
import { ExitKind, exitKindName, type VcpuDescriptor } from "../runtime/hypervisor/hypervisor.js";
import type { CpuState, CpuidEntry } from "../runtime/hypervisor/x86/cpu-state.js";
import { GuestMemory, type SharedRegion } from "../memory/guest-memory.js";
import { MarkerDevice } from "./marker-device.js";

export interface PostMessageWorkerData {
  descriptor: VcpuDescriptor;
  memory: SharedRegion[];
  cpuState: CpuState;
  cpuid: CpuidEntry[];
  markerLog: SharedArrayBuffer;
  markerPort: number;
  finishPort: number;
}

/** An exit as the naive path sends it. */
export interface ExitMessage {
  type: "exit";
  kind: number;
  address: number;
  size: number;
  data: number;
}

export type WorkerMessage = ExitMessage | { type: "done"; exits: number } | { type: "failed"; message: string };

const port = parentPort!;
const data = workerData as PostMessageWorkerData;

function nextReply(): Promise<number> {
  return new Promise((resolve) => port.once("message", resolve));
}

async function main(): Promise<void> {
  const vcpu = attachVcpu(data.descriptor, { memory: GuestMemory.fromShared(data.memory) });
  try {
    vcpu.setCpuid(data.cpuid);
    vcpu.setSpecialRegisters({ ...vcpu.getSpecialRegisters(), ...data.cpuState.specialRegisters });
    vcpu.setRegisters({ ...vcpu.getRegisters(), ...data.cpuState.registers });
    const marker = new MarkerDevice(data.markerLog);
    let exits = 0;
    for (;;) {
      const exit = vcpu.run();
      exits++;
      const { kind, address } = exit;
      if (kind === ExitKind.Interrupted) {
        vcpu.clearKick();
        continue;
      }
      if (kind === ExitKind.IoOut && address === data.markerPort) {
        marker.write(0, 4, exit.data);
        vcpu.complete();
        continue;
      }
      if (kind === ExitKind.IoIn && address === data.markerPort) {
        vcpu.completeRead(marker.read(0, 4));
        continue;
      }
      if (kind === ExitKind.IoOut && address === data.finishPort) break;
      if (kind !== ExitKind.IoOut && kind !== ExitKind.IoIn && kind !== ExitKind.MmioWrite && kind !== ExitKind.MmioRead) {
        throw new Error(`unexpected ${exitKindName(kind)} exit (${exit.detail})`);
      }
      const message: ExitMessage = { type: "exit", kind, address, size: exit.size, data: exit.data };
      port.postMessage(message);
      const answer = await nextReply();
      if (kind === ExitKind.IoIn || kind === ExitKind.MmioRead) vcpu.completeRead(answer);
      else vcpu.complete();
    }
    port.postMessage({ type: "done", exits } satisfies WorkerMessage);
  } finally {
    vcpu.close();
  }
}

main().catch((error: unknown) => {
  port.postMessage({ type: "failed", message: error instanceof Error ? error.message : String(error) } satisfies WorkerMessage);
});
