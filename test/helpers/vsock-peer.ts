/**
 * The host side guests/virtio-vsock-check.c talks to, over Firecracker's Unix sockets: a
 * server for its guest-initiated connection and a host-initiated connection to it.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export const A_BYTES = 3000;
export const B_BYTES = 5000;
export const patternA = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 1) & 0xff));
export const patternB = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 11 + (i >> 9) + 3) & 0xff));

/** The host's server for guest-initiated connections to `port`: answers A_BYTES with them XOR 0x5a, then ends. */
export function xorServer(udsPath: string, port: number): { server: Server; got: () => Buffer } {
  const chunks: Buffer[] = [];
  const server = createServer((socket) => {
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (Buffer.concat(chunks).length >= A_BYTES) socket.end(Buffer.from(Buffer.concat(chunks).map((b) => b ^ 0x5a)));
    });
  });
  server.listen(`${udsPath}_${port}`);
  return { server, got: () => Buffer.concat(chunks) };
}

/** Connects to the device's socket, asks for guest port `port`, sends `data` after OK, collects the rest. */
export function hostConnect(udsPath: string, port: number, data: Buffer): Promise<{ okLine: string; received: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket: Socket = createConnection(udsPath, () => socket.write(`CONNECT ${port}\n`));
    let buffered = Buffer.alloc(0);
    let okLine: string | undefined;
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (okLine === undefined) {
        const end = buffered.indexOf(0x0a);
        if (end < 0) return;
        okLine = buffered.subarray(0, end).toString("latin1");
        buffered = buffered.subarray(end + 1);
        socket.write(data);
      }
    });
    socket.on("error", reject);
    socket.on("close", () => resolve({ okLine: okLine ?? "", received: buffered }));
  });
}
