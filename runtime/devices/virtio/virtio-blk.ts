/**
 * virtio-blk (virtio 1.2 section 5.2) over a raw image file: read, write, flush (fsync
 * before the request completes), GET_ID (the serial), read-only mode, SEG_MAX and BLK_SIZE
 * in the config. One request queue, served synchronously where the notification lands.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from "node:fs";
import type { BufferSegment, DescriptorChain, SplitVirtqueue } from "./virtqueue.js";
import { gather, scatter } from "./segments.js";
import { featureBit, VIRTIO_ID_BLOCK, type VirtioDevice, type VirtioQueueContext } from "./virtio-device.js";

export const SECTOR_SIZE = 512;
export const VIRTIO_BLK_QUEUE_SIZE = 256;
/** Data segments per request a driver may use (the header and status take two descriptors). */
export const VIRTIO_BLK_SEG_MAX = VIRTIO_BLK_QUEUE_SIZE - 2;
export const VIRTIO_BLK_ID_BYTES = 20;

/** Feature bits (section 5.2.3). */
export const VIRTIO_BLK_F_SEG_MAX = 2n;
export const VIRTIO_BLK_F_RO = 5n;
export const VIRTIO_BLK_F_BLK_SIZE = 6n;
export const VIRTIO_BLK_F_FLUSH = 9n;

/** Request types and status values (section 5.2.6). */
export const VirtioBlkRequest = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8 } as const;
export const VirtioBlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
const HEADER_BYTES = 16;
const CONFIG_BYTES = 60;

export class BlockImageError extends Error {
  override name = "BlockImageError";
}

export interface VirtioBlkOptions {
  /** A raw disk image; its size is rounded down to whole 512-byte sectors. */
  path: string;
  readOnly?: boolean;
  /** What GET_ID returns: up to 20 bytes of ASCII. */
  serial?: string;
}

export interface VirtioBlkStats {
  reads: number;
  writes: number;
  flushes: number;
  /** Requests failed with IOERR or UNSUPP. */
  failed: number;
}

export class VirtioBlk implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly features: bigint;
  readonly queueSizes = [VIRTIO_BLK_QUEUE_SIZE];
  readonly config = new Uint8Array(CONFIG_BYTES);
  readonly readOnly: boolean;
  readonly capacityBytes: number;
  readonly stats: VirtioBlkStats = { reads: 0, writes: 0, flushes: 0, failed: 0 };
  private readonly serial: Uint8Array;
  private fd: number | undefined;
  private readonly header = new Uint8Array(HEADER_BYTES);
  private readonly headerView = new DataView(this.header.buffer);

  constructor(options: VirtioBlkOptions) {
    this.readOnly = options.readOnly ?? false;
    this.name = `virtio-blk ${options.path}`;
    const serial = options.serial ?? "workervisor";
    if (!/^[\x20-\x7e]{0,20}$/.test(serial)) {
      throw new BlockImageError(`virtio-blk serial '${serial}' must be at most ${VIRTIO_BLK_ID_BYTES} printable ASCII characters`);
    }
    this.serial = new TextEncoder().encode(serial);
    try {
      this.fd = openSync(options.path, this.readOnly ? "r" : "r+");
    } catch (error) {
      throw new BlockImageError(
        `cannot open the block image ${options.path} ${this.readOnly ? "for reading" : "for reading and writing"}: ` +
          `${(error as Error).message}. Give an existing raw image file${this.readOnly ? "" : " you may write, or readOnly: true"}.`,
        { cause: error },
      );
    }
    let size: number;
    try {
      const stat = fstatSync(this.fd);
      if (!stat.isFile()) throw new Error("not a regular file");
      size = stat.size;
    } catch (error) {
      this.close();
      throw new BlockImageError(`the block image ${options.path} cannot be used: ${(error as Error).message}. Give a raw image file.`, { cause: error });
    }
    this.capacityBytes = size - (size % SECTOR_SIZE);
    if (this.capacityBytes === 0) {
      this.close();
      throw new BlockImageError(`the block image ${options.path} is ${size} bytes: it needs at least one 512-byte sector`);
    }
    this.features = featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE) | featureBit(VIRTIO_BLK_F_FLUSH) |
      (this.readOnly ? featureBit(VIRTIO_BLK_F_RO) : 0n);
    const config = new DataView(this.config.buffer);
    config.setBigUint64(0, BigInt(this.capacityBytes / SECTOR_SIZE), true); // capacity
    config.setUint32(12, VIRTIO_BLK_SEG_MAX, true); // seg_max
    config.setUint32(20, SECTOR_SIZE, true); // blk_size
  }

  get isOpen(): boolean {
    return this.fd !== undefined;
  }

  /** Closes the image; the device then fails every request. Safe to call twice. */
  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  processQueue(_index: number, queue: SplitVirtqueue, context: VirtioQueueContext): void {
    // At most a queue's worth per call: a guest refilling the ring from another vCPU must not
    // hold the main thread; the transport calls again later for what is left.
    for (let budget = queue.size, chain = queue.pop(); chain !== undefined && !(chain instanceof Error); chain = --budget > 0 ? queue.pop() : undefined) {
      const status = statusByte(chain);
      if (status === undefined) {
        context.needsReset(`request ${chain.head} has no device-writable byte for its status`);
        return;
      }
      let result: { status: number; written: number };
      try {
        result = this.serve(chain, status.dataLength);
      } catch {
        result = { status: VirtioBlkStatus.IOERR, written: 0 }; // the host file failed (EIO, short file)
      }
      if (result.status !== VirtioBlkStatus.OK) this.stats.failed++;
      status.segment.bytes[status.segment.bytes.length - 1] = result.status;
      queue.pushUsed(chain.head, result.written + 1);
    }
  }

  reset(): void {}

  private serve(chain: DescriptorChain, inLength: number): { status: number; written: number } {
    const fail = { status: VirtioBlkStatus.IOERR, written: 0 };
    if (gather(chain.readable, this.header) < HEADER_BYTES || this.fd === undefined) return fail;
    const type = this.headerView.getUint32(0, true);
    const sector = this.headerView.getBigUint64(8, true);
    switch (type) {
      case VirtioBlkRequest.IN: {
        const position = this.range(sector, inLength);
        if (position === undefined) return fail;
        this.stats.reads++;
        return { status: VirtioBlkStatus.OK, written: this.transfer(chain.writable, inLength, position, "read") };
      }
      case VirtioBlkRequest.OUT: {
        const outLength = chain.readableLength - HEADER_BYTES;
        const position = this.range(sector, outLength);
        if (this.readOnly || position === undefined) return fail;
        this.stats.writes++;
        this.transfer(chain.readable, outLength, position, "write", HEADER_BYTES);
        return { status: VirtioBlkStatus.OK, written: 0 };
      }
      case VirtioBlkRequest.FLUSH:
        this.stats.flushes++;
        try {
          fsyncSync(this.fd);
        } catch {
          return fail;
        }
        return { status: VirtioBlkStatus.OK, written: 0 };
      case VirtioBlkRequest.GET_ID: {
        const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
        id.set(this.serial);
        return { status: VirtioBlkStatus.OK, written: scatter(chain.writable, id.subarray(0, Math.min(inLength, VIRTIO_BLK_ID_BYTES))) };
      }
      default:
        return { status: VirtioBlkStatus.UNSUPP, written: 0 };
    }
  }

  /** The byte offset of a transfer of `length` at `sector`, if whole sectors inside the image. */
  private range(sector: bigint, length: number): number | undefined {
    if (length % SECTOR_SIZE !== 0 || sector > BigInt(this.capacityBytes / SECTOR_SIZE)) return undefined;
    const position = Number(sector) * SECTOR_SIZE;
    return position + length <= this.capacityBytes ? position : undefined;
  }

  /**
   * Moves `length` bytes between the image at `position` and the segments (skipping the
   * first `skip` bytes of them). Returns the bytes moved.
   */
  private transfer(segments: BufferSegment[], length: number, position: number, direction: "read" | "write", skip = 0): number {
    let moved = 0;
    for (const { bytes } of segments) {
      if (moved >= length) break;
      if (skip >= bytes.length) {
        skip -= bytes.length;
        continue;
      }
      const count = Math.min(bytes.length - skip, length - moved);
      let done = 0;
      while (done < count) {
        const n = direction === "read"
          ? readSync(this.fd!, bytes, skip + done, count - done, position + moved + done)
          : writeSync(this.fd!, bytes, skip + done, count - done, position + moved + done);
        if (n <= 0) throw new Error(`short ${direction} at byte ${position + moved + done} of the image`);
        done += n;
      }
      moved += count;
      skip = 0;
    }
    return moved;
  }
}

/** The last writable byte (the status) and how many writable bytes precede it. */
function statusByte(chain: DescriptorChain): { segment: BufferSegment; dataLength: number } | undefined {
  for (let i = chain.writable.length - 1; i >= 0; i--) {
    if (chain.writable[i].bytes.length > 0) {
      const trailing = chain.writable.slice(i + 1).reduce((n, s) => n + s.bytes.length, 0);
      return { segment: chain.writable[i], dataLength: chain.writableLength - 1 - trailing };
    }
  }
  return undefined;
}
