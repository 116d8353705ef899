/** The messages between a VM (main thread) and a device worker. Structured-clonable only. */
import type { MessagePort } from "node:worker_threads";
import type { SharedRegion } from "../memory/guest-memory.js";
import type { LevelIrqFd } from "../runtime/hypervisor/hypervisor.js";

/** A virtio device the worker builds itself: `new (module's export)(options)`. */
export interface VirtioWorkerDeviceSpec {
  /** File URL or absolute path of an ES module. */
  module: string;
  /** The name of the exported class; its constructor takes `options`. */
  export: string;
  /** Structured-clonable: what the class's constructor gets. */
  options?: unknown;
}

export interface DeviceWorkerTask {
  device: VirtioWorkerDeviceSpec;
  memory: SharedRegion[];
  /** The transport's register file (virtio-mmio-registers.ts), its write mailbox inside. */
  registers: SharedArrayBuffer;
  /** The line is a resampling irqfd (else the worker asks the main thread to drive it). */
  resampledLine: boolean;
  /** The VM's end of the conversation (transferred): "ready", "log" and "line" out; "start" or "stop" in. */
  port: MessagePort;
}

/** After "ready": the eventfds the VM registered for the device's queues and line. */
export interface DeviceWorkerStart {
  kind: "start";
  /** QueueNotify ioeventfd of each queue, by queue index. */
  notifyFds: number[];
  irq?: LevelIrqFd;
}

export type DeviceWorkerMessage =
  | { kind: "ready"; queues: number }
  | { kind: "log"; message: string }
  | { kind: "line"; level: boolean };
