/**
 * A virtio device's own thread (DESIGN section 4, placement "device worker"), a task of the
 * device-worker pool that holds its thread for the VM's life: it builds the
 * device from a module and structured-clonable options, runs the transport's state machine
 * over the shared register file, and blocks in poll(2) on its eventfds: the QueueNotify
 * ioeventfds (the guest's doorbell ends in the kernel, no exit), the write mailbox's eventfd
 * (state-changing register writes from vCPU workers), the irqfd's resample eventfd and the
 * host-side fds the device asks it to watch (a TAP, a switch port's bell); a device whose
 * host side lives on the event loop (vsock's sockets) has that poll(2) made on a pool thread
 * so the worker's loop turns meanwhile. It
 * walks the queues in the guest-memory SABs and completes through the irqfd. The main thread
 * only starts it, hears its log lines, and (on hosts without a resampling irqfd) drives the
 * line for it.
 */
import { once } from "node:events";
import type { MessagePort } from "node:worker_threads";
import { closeEventFd, createEventFd, EventFdPoller, signalEventFd } from "../runtime/hypervisor/eventfd.js";
import type { InterruptLine } from "../runtime/devices/device.js";
import { VirtioMmioTransport } from "../runtime/devices/virtio/mmio-transport.js";
import { StatWord, VirtioMmioRegisters } from "../runtime/devices/virtio/virtio-mmio-registers.js";
import { VirtioWriteMailbox } from "../runtime/devices/virtio/virtio-write-mailbox.js";
import type { FdWatcher, VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { threadCpuNs } from "../runtime/thread-cpu.js";
import type { DeviceWorkerMessage, DeviceWorkerStart, DeviceWorkerTask } from "./device-worker-task.js";

/**
 * The longest wait a device on the event loop makes on a pool thread. libuv's pool is the
 * process's (4 threads by default, shared with file system, DNS and zlib work): a wait for
 * as long as the VM runs would take a thread from it for good, and a few such devices all
 * of it. Ending the wait this often and queueing it again lets other work in between.
 */
const POOL_WAIT_MS = 20;


/** Host-side fds a device has its worker's poll(2) watch (a TAP, a ring's bell eventfd). */
class WatchedFds {
  /** The set changed since the last snapshot: the poller must be rebuilt. */
  changed = false;
  private readonly live = new Map<number, { fd: number; onReadable: () => void }>();
  private polled: [number, { fd: number; onReadable: () => void }][] = [];
  private next = 0;

  readonly watch: FdWatcher = (fd, onReadable) => {
    const id = this.next++;
    this.live.set(id, { fd, onReadable });
    this.changed = true;
    return () => {
      if (this.live.delete(id)) this.changed = true;
    };
  };

  /** The fds to poll from now on, in the order `callReadable` expects them. */
  snapshot(): number[] {
    this.changed = false;
    this.polled = [...this.live];
    return this.polled.map(([, w]) => w.fd);
  }

  /** Calls back each watch the last wait found readable; the snapshot's fds start at `first`. */
  callReadable(poller: EventFdPoller, first: number): void {
    for (let i = 0; i < this.polled.length; i++) {
      const [id, watch] = this.polled[i];
      // A callback may stop a watch (its fd then closed): only live ones are called.
      if (poller.readable(first + i) && this.live.has(id)) watch.onReadable();
    }
  }
}

async function buildDevice(task: DeviceWorkerTask): Promise<VirtioDevice> {
  const { module, export: name, options } = task.device;
  const loaded = await import(module) as Record<string, unknown>;
  const constructor = loaded[name];
  if (typeof constructor !== "function") throw new TypeError(`virtio device module ${module} has no export '${name}' to construct`);
  return new (constructor as new (options: unknown) => VirtioDevice)(options);
}

/**
 * What a device counts, for the host once the worker is done: its own plain-data fields,
 * and `workerCpuNs`, the CPU time this thread spent from the start of the guest's use on.
 */
function deviceStats(device: VirtioDevice, cpuSince?: number): Record<string, unknown> {
  const out: Record<string, unknown> = cpuSince === undefined ? {} : { workerCpuNs: threadCpuNs() - cpuSince };
  for (const [key, value] of Object.entries(device)) {
    if (typeof value === "number" || typeof value === "boolean") out[key] = value;
    else if (typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype && Object.values(value).every((v) => typeof v === "number")) out[key] = { ...value };
  }
  return out;
}

/**
 * The pool's task (runtime/device-worker-pool.ts): runs one device until the VM stops it,
 * talking to the VM over `task.port`; resolves with what the device counted.
 */
export default async function runDeviceWorker(task: DeviceWorkerTask | { warmup: true }): Promise<Record<string, unknown> | "warm"> {
  if ("warmup" in task) return "warm";
  const port: MessagePort = task.port;
  const post = (message: DeviceWorkerMessage) => port.postMessage(message);
  try {
    return await serveDevice(task, port, post);
  } finally {
    port.close();
  }
}

async function serveDevice(task: DeviceWorkerTask, port: MessagePort, post: (message: DeviceWorkerMessage) => void): Promise<Record<string, unknown>> {
  const device = await buildDevice(task);
  try {
    const registers = new VirtioMmioRegisters(task.registers);
    const mailbox = new VirtioWriteMailbox(registers.mailboxWords());
    // Continuations of budget-limited queue walks run before the next wait.
    const later: (() => void)[] = [];
    let start: DeviceWorkerStart | undefined;
    // With a resampling irqfd the kernel holds the line high from a trigger until the guest's
    // EOI, then signals the resample eventfd. Triggering only while it is low matters: KVM's
    // IOAPIC takes every assertion of an edge-programmed pin as a new interrupt.
    let lineHigh = false;
    const line: InterruptLine = {
      set(level: boolean) {
        if (start?.irq === undefined) {
          post({ kind: "line", level });
        } else if (level && !lineHigh) {
          lineHigh = true;
          signalEventFd(start.irq.trigger);
        }
      },
    };
    const watched = new WatchedFds();
    // A device on the event loop waits asynchronously; work its callbacks schedule must end that wait.
    const loopWake = device.usesEventLoop === true ? createEventFd() : -1;
    let waitingAsync = false;
    try {
      const transport = new VirtioMmioTransport({
        memory: GuestMemory.fromShared(task.memory), device, interrupt: line, registers,
        log: (message) => post({ kind: "log", message }),
        schedule: (serve) => {
          later.push(serve);
          if (waitingAsync) signalEventFd(loopWake);
        },
        resampledLine: task.resampledLine,
        watchFd: watched.watch,
      });
      await device.ready;
      post({ kind: "ready", queues: device.queueSizes.length });
      const [message] = await once(port, "message") as [DeviceWorkerStart | { kind: "stop" }];
      if (message.kind === "stop") return deviceStats(device);
      start = message;
      const cpuAtStart = threadCpuNs();
      const fixedFds = [mailbox.eventFd, ...start.notifyFds];
      const resampleIndex = start.irq === undefined ? -1 : fixedFds.push(start.irq.resample) - 1;
      const loopWakeIndex = loopWake < 0 ? -1 : fixedFds.push(loopWake) - 1;
      let poller = new EventFdPoller(fixedFds);
      const queues = start.notifyFds.length;
      for (;;) {
        if (watched.changed) poller = new EventFdPoller([...fixedFds, ...watched.snapshot()]);
        if (loopWake < 0) {
          poller.wait(later.length > 0 ? 0 : -1);
        } else {
          waitingAsync = true;
          const ready = await poller.waitAsync(later.length > 0 ? 0 : POOL_WAIT_MS);
          waitingAsync = false;
          // A wait that ran out with nothing ready only gives the pool thread back.
          if (ready === 0 && later.length === 0) continue;
          poller.take(loopWakeIndex);
        }
        registers.count(StatWord.workerWakes);
        if (mailbox.stopRequested) return deviceStats(device, cpuAtStart);
        poller.take(0);
        const write = mailbox.take();
        if (write !== undefined) {
          try {
            // Every virtio-mmio register is 32 bits wide (virtio 1.2 section 4.2.2): no high word.
            transport.write(write.offset, write.size as 1 | 2 | 4 | 8, write.low >>> 0);
          } finally {
            mailbox.answer();
          }
        }
        // The EOI first: a completion below must see the line low to assert it again.
        if (resampleIndex >= 0 && poller.take(resampleIndex) > 0) {
          lineHigh = false;
          if (transport.interruptPending) line.set(true);
        }
        for (let q = 0; q < queues; q++) {
          const count = poller.take(1 + q);
          if (count > 0) transport.notified(q, count);
        }
        watched.callReadable(poller, fixedFds.length);
        for (const serve of later.splice(0)) serve();
      }
    } finally {
      if (loopWake >= 0) closeEventFd(loopWake);
    }
  } finally {
    device.close?.();
  }
}
