/**
 * The device-worker placement of a virtio-mmio transport, as the main thread holds it: it
 * lays out the register file (read by every vCPU worker through virtio-mmio-worker.ts),
 * starts the device's worker (workers/device-worker.ts, a task of a warm pool), gives it a
 * QueueNotify ioeventfd per queue and a resampling irqfd, and stops it with the VM. After setup the main thread
 * sees only log lines and, on a host without a resampling irqfd, line changes to make.
 */
import { MessageChannel, type MessagePort } from "node:worker_threads";
import { deviceWorkerPool } from "../../device-worker-pool.js";
import type { DeviceThread, Vm } from "../../vm.js";
import { DeviceWorkerError, VmConfigError } from "../../errors.js";
import { closeEventFd, createEventFd } from "../../hypervisor/eventfd.js";
import type { LevelIrqFd } from "../../hypervisor/hypervisor.js";
import type { InterruptLine } from "../device.js";
import { StatWord, VIRTIO_MMIO_LENGTH, VirtioMmio, VirtioMmioRegisters, type VirtioMmioStats, Word } from "./virtio-mmio-registers.js";
import { VirtioWriteMailbox } from "./virtio-write-mailbox.js";
import type { DeviceWorkerMessage, DeviceWorkerStart, DeviceWorkerTask, VirtioWorkerDeviceSpec } from "../../../workers/device-worker-task.js";

const REGISTERS_MODULE = new URL("./virtio-mmio-worker.js", import.meta.url).href;

export type { VirtioWorkerDeviceSpec };

export interface VirtioWorkerOptions {
  vm: Vm;
  /** The transport's window on the MMIO bus and its GSI. */
  base: number;
  gsi: number;
  device: VirtioWorkerDeviceSpec;
  /**
   * How completions reach the guest: "irqfd" (a resampling irqfd; no thread but the device's
   * involved), "main-thread" (the worker asks the main thread to drive the line), or "auto"
   * (default: irqfd where the host has one).
   */
  interrupts?: "auto" | "irqfd" | "main-thread";
  log?: (message: string) => void;
}

export class VirtioWorkerTransport implements DeviceThread {
  readonly name: string;
  readonly registers = VirtioMmioRegisters.allocate();
  /** Settles when the device is built and its eventfds are given (rejects if it could not be built). */
  readonly ready: Promise<void>;
  /** How the device's interrupts are delivered. */
  readonly interruptPath: "irqfd" | "main-thread";
  /** What the device counted, once its worker has stopped. */
  deviceStats: Record<string, unknown> | undefined;
  /** Our end of the conversation with the worker. */
  private readonly port: MessagePort;
  private readonly mailbox: VirtioWriteMailbox;
  private readonly mailboxFd: number;
  private readonly exited: Promise<void>;
  private stopping = false;
  private exitedValue = false;
  /** Handles one message from the worker (set up in the constructor, where the VM is at hand). */
  private readonly heard: (message: DeviceWorkerMessage) => void;
  private mailboxFdOpen = true;

  constructor(options: VirtioWorkerOptions) {
    const { vm, base, gsi, device } = options;
    if (typeof device?.module !== "string" || typeof device.export !== "string") {
      throw new VmConfigError("a virtio device on a worker needs { module, export } naming the class to construct there");
    }
    this.name = `virtio-mmio ${device.export} (device worker)`;
    const log = options.log ?? ((message: string) => console.warn(message));
    const choice = options.interrupts ?? "auto";
    if (!["auto", "irqfd", "main-thread"].includes(choice)) throw new VmConfigError(`interrupts must be "auto", "irqfd" or "main-thread", got ${String(choice)}`);
    const irq: LevelIrqFd | undefined = choice === "main-thread" ? undefined : vm.levelIrqFd(gsi);
    if (choice === "irqfd" && irq === undefined) {
      throw new VmConfigError(`${this.name}: this host has no resampling irqfd (KVM_CAP_IRQFD_RESAMPLE); use interrupts: "main-thread" or "auto"`);
    }
    this.interruptPath = irq === undefined ? "main-thread" : "irqfd";
    this.registers.set(Word.AckInPlace, irq === undefined ? 0 : 1);
    vm.addWorkerDevice({ space: "mmio", base, length: VIRTIO_MMIO_LENGTH, shared: this.registers.shared, module: REGISTERS_MODULE });
    const fail = vm.addDeviceThread(this);
    const line: InterruptLine = vm.interruptLine(gsi);

    this.mailboxFd = createEventFd();
    this.mailbox = new VirtioWriteMailbox(this.registers.mailboxWords());
    this.mailbox.bind(this.mailboxFd);
    const channel = new MessageChannel();
    this.port = channel.port1;
    const task: DeviceWorkerTask = {
      device, memory: vm.memory.toShared(), registers: this.registers.shared, resampledLine: irq !== undefined, port: channel.port2,
    };
    let readyResolve!: () => void;
    let readyReject!: (error: Error) => void;
    this.ready = new Promise((resolve, reject) => ((readyResolve = resolve), (readyReject = reject)));
    this.ready.catch(() => {}); // surfaced to whoever awaits it, and through the VM
    let failure: Error | undefined;
    const failWith = (cause: unknown) => {
      if (failure !== undefined) return;
      failure = new DeviceWorkerError(device.export, cause);
      // A vCPU waiting on the mailbox must not wait for a thread that is gone.
      this.mailbox.close();
      readyReject(failure);
      fail(failure);
    };
    this.port.on("message", (message: DeviceWorkerMessage) => {
      try {
        this.heard(message);
      } catch (error) {
        // A line the backend cannot drive (mshv has no irqchip), a log sink that throws.
        failWith(error);
      }
    });
    this.heard = (message: DeviceWorkerMessage) => {
      switch (message.kind) {
        case "ready": {
          if (this.stopping) return;
          try {
            const notifyFds = Array.from({ length: message.queues }, (_, q) =>
              vm.attachIoEvent({ space: "mmio", address: base + VirtioMmio.QueueNotify, size: 4, value: q }));
            const start: DeviceWorkerStart = { kind: "start", notifyFds, irq };
            this.port.postMessage(start);
            readyResolve();
          } catch (error) {
            this.port.postMessage({ kind: "stop" });
            failWith(error);
          }
          return;
        }
        case "log": log(message.message); return;
        case "line":
          this.registers.count(StatWord.mainThreadLineChanges);
          line.set(message.level);
          return;
      }
    };
    const ended = () => {
      this.exitedValue = true;
      this.mailbox.close();
      this.port.close();
    };
    this.exited = deviceWorkerPool().run(task, { transferList: [channel.port2] }).then(
      (stats) => {
        if (stats !== "warm") this.deviceStats = stats;
        ended();
        if (!this.stopping) failWith(new Error("it ended while the VM still needed it"));
      },
      (error) => {
        ended();
        failWith(error);
      },
    );
  }

  /** Whether the device's task has ended (its pool thread is free again). */
  get exitedThread(): boolean {
    return this.exitedValue;
  }

  get stats(): VirtioMmioStats {
    return this.registers.stats;
  }

  /** The device status byte as the driver last saw it. */
  get deviceStatus(): number {
    return this.registers.get(Word.Status);
  }

  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      // Before "start" the worker waits for a message; after, in poll(2) on the mailbox's eventfd.
      this.port.postMessage({ kind: "stop" });
      this.mailbox.requestStop();
    }
    await this.exited;
    if (this.mailboxFdOpen) {
      this.mailboxFdOpen = false;
      closeEventFd(this.mailboxFd);
    }
  }
}
