/**
 * The guest console on the user's terminal, as QEMU's `-serial stdio` behaves: stdin in raw
 * mode (every key goes to the guest, Ctrl-C included), and Ctrl-A as the escape key:
 * Ctrl-A x quits, Ctrl-A h lists the keys, Ctrl-A Ctrl-A sends one Ctrl-A. Raw mode is
 * undone on every way out. Piped input has no escape (bytes are data) and no raw mode.
 */
import { Readable } from "node:stream";
import type { InputSource } from "./devices/serial-input.js";

const CTRL_A = 0x01;

export const ESCAPE_HELP = "C-a x    quit\r\nC-a h    this help\r\nC-a C-a  send C-a\r\n";

/** Takes the escape sequences out of terminal input; passes the rest on. */
export class EscapeFilter {
  private afterEscape = false;

  constructor(private readonly actions: { quit(): void; help(): void }) {}

  /** The bytes of `chunk` that are the guest's. */
  filter(chunk: Uint8Array): Uint8Array {
    const out: number[] = [];
    for (const byte of chunk) {
      if (this.afterEscape) {
        this.afterEscape = false;
        if (byte === 0x78 /* x */) {
          this.actions.quit();
          break; // nothing typed after quitting reaches the guest
        }
        if (byte === 0x68 /* h */) this.actions.help();
        else if (byte === CTRL_A) out.push(CTRL_A);
        else out.push(CTRL_A, byte); // not an escape: both keys are the guest's
      } else if (byte === CTRL_A) {
        this.afterEscape = true;
      } else {
        out.push(byte);
      }
    }
    return Uint8Array.from(out);
  }
}

interface TerminalInput extends InputSource {
  isTTY?: boolean;
  setRawMode?(raw: boolean): unknown;
}

/**
 * stdin as the console's input: a TTY in raw mode through the escape filter, anything else
 * as it is. `close()` restores the terminal; it is also run if the process exits first.
 */
export class TerminalConsoleInput implements InputSource {
  private readonly listeners = new Map<(chunk: Buffer | string) => void, (chunk: Buffer | string) => void>();
  private readonly filter: EscapeFilter | undefined;
  private readonly restore = (): void => this.close();
  private raw = false;

  constructor(private readonly stdin: TerminalInput, actions: { quit(): void; help(): void }) {
    if (stdin.isTTY && stdin.setRawMode) {
      this.filter = new EscapeFilter(actions);
      stdin.setRawMode(true);
      this.raw = true;
      process.once("exit", this.restore);
    }
  }

  get escapes(): boolean {
    return this.filter !== undefined;
  }

  on(event: "data", listener: (chunk: Buffer | string) => void): unknown {
    const filter = this.filter;
    const wrapped = filter
      ? (chunk: Buffer | string) => {
          const bytes = filter.filter(typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk);
          if (bytes.length > 0) listener(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
        }
      : listener;
    this.listeners.set(listener, wrapped);
    return this.stdin.on(event, wrapped);
  }

  off(event: "data", listener: (chunk: Buffer | string) => void): unknown {
    const wrapped = this.listeners.get(listener) ?? listener;
    this.listeners.delete(listener);
    return this.stdin.off(event, wrapped);
  }

  pause(): unknown {
    return this.stdin.pause();
  }

  /** This input as a Readable (a virtio console's host side): stdin pauses while its reader is full. */
  readable(): Readable {
    const stream = new Readable({ read: () => void this.resume() });
    this.on("data", (chunk) => {
      if (!stream.push(chunk)) this.pause();
    });
    return stream;
  }

  resume(): unknown {
    return this.stdin.resume();
  }

  close(): void {
    if (!this.raw) return;
    this.raw = false;
    this.stdin.setRawMode?.(false);
    process.off("exit", this.restore);
  }
}
