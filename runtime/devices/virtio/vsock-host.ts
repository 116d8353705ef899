/**
 * The host side of virtio-vsock, as Firecracker does it (its docs/vsock.md): AF_VSOCK in
 * the guest, AF_UNIX on the host.
 *   - host-initiated: the host connects to the Unix socket at `udsPath` and writes
 *     `CONNECT <port>\n`; once the guest accepts, it reads `OK <hostport>\n` and the same
 *     connection carries the stream (the guest refusing closes it);
 *   - guest-initiated: a guest connecting to host port P reaches the Unix socket at
 *     `<udsPath>_P`, where host software listens.
 * The device sees only `VsockHost`: streams in and out, no paths, so it can be given
 * another host side (in-process, or posted from a device worker).
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { existsSync, unlinkSync } from "node:fs";
import type { Duplex } from "node:stream";

export class VsockHostError extends Error {
  override name = "VsockHostError";
}

/** What the device answers a host-initiated connection with. */
export interface VsockHostRequest {
  readonly guestPort: number;
  readonly stream: Duplex;
  /** Bytes the host sent after its request line: the first of the stream's data. */
  readonly early: Buffer;
  /** The guest accepted: the connection is `hostPort` on the host's side. */
  accepted(hostPort: number): void;
  refused(): void;
}

export interface VsockHost {
  /** A guest-initiated connection to host port `port`; emits 'connect' or 'error'. */
  connect(port: number): Duplex;
  /** Where host-initiated connections go; set once by the device. */
  listen(onRequest: (request: VsockHostRequest) => void): void;
  close(): void;
}

/** The longest `CONNECT <port>\n` line accepted (the port is a decimal u32). */
const MAX_REQUEST_LINE = 32;

export class UnixSocketVsockHost implements VsockHost {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** Resolves once the listening socket exists (rejects with a VsockHostError). */
  readonly listening: Promise<void>;
  private markListening!: () => void;
  private failListening!: (error: Error) => void;

  constructor(readonly udsPath: string) {
    if (existsSync(udsPath)) {
      throw new VsockHostError(`the vsock socket path ${udsPath} already exists; remove it (a stale socket of an earlier VM?) or give another uds_path`);
    }
    this.listening = new Promise((resolve, reject) => {
      this.markListening = resolve;
      this.failListening = reject;
    });
    this.listening.catch(() => {});
  }

  connect(port: number): Duplex {
    const socket = createConnection(`${this.udsPath}_${port}`);
    this.track(socket);
    return socket;
  }

  listen(onRequest: (request: VsockHostRequest) => void): void {
    if (this.server !== undefined) return;
    const server = createServer((socket) => {
      this.track(socket);
      readRequestLine(socket, onRequest);
    });
    server.on("error", (error) => this.failListening(new VsockHostError(`cannot listen for vsock connections on ${this.udsPath}: ${error.message}`, { cause: error })));
    server.listen(this.udsPath, () => this.markListening());
    this.server = server;
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (this.server === undefined) return;
    this.server.close();
    this.server = undefined;
    try {
      unlinkSync(this.udsPath);
    } catch {
      // never bound, or already gone
    }
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {}); // the device reports what matters; an unhandled one would crash the process
  }
}

/** Reads `CONNECT <port>\n` and hands the rest of the connection to the device. */
function readRequestLine(socket: Socket, onRequest: (request: VsockHostRequest) => void): void {
  let line = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    line = Buffer.concat([line, chunk]);
    const end = line.indexOf(0x0a);
    if (end < 0) {
      if (line.length > MAX_REQUEST_LINE) socket.destroy();
      return;
    }
    socket.off("data", onData);
    socket.pause();
    const match = /^CONNECT (\d{1,10})$/.exec(line.subarray(0, end).toString("latin1"));
    const port = match ? Number(match[1]) : NaN;
    if (!(port <= 0xffff_ffff)) {
      socket.destroy();
      return;
    }
    onRequest({
      guestPort: port, stream: socket, early: line.subarray(end + 1),
      accepted: (hostPort) => {
        socket.write(`OK ${hostPort}\n`);
      },
      refused: () => socket.destroy(),
    });
  };
  socket.on("data", onData);
}
