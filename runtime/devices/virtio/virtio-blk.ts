/**
 * virtio-blk (virtio 1.2 section 5.2) over a raw image file: read, write, flush (fsync
 * before the request completes), GET_ID (the serial), read-only mode, SEG_MAX and BLK_SIZE
 * in the config, and DISCARD and WRITE_ZEROES where the image's filesystem can punch holes
 * (image-space.ts). One request queue, served synchronously where the notification lands.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from "node:fs";
import type { BufferSegment, DescriptorChain, SplitVirtqueue } from "./virtqueue.js";
import { gather, scatter } from "./segments.js";
import { ImageSpace } from "./image-space.js";
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
export const VIRTIO_BLK_F_DISCARD = 13n;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14n;

/** Request types and status values (section 5.2.6). */
export const VirtioBlkRequest = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13 } as const;
export const VirtioBlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
/** The one flag of a discard/write-zeroes segment; the other 31 bits are reserved. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
export const DISCARD_SEGMENT_BYTES = 16;
/**
 * Limits offered for DISCARD and WRITE_ZEROES (max_*_sectors per segment, max_*_seg per
 * request). They bound what one request costs the host where zeroes must be written out
 * (a filesystem without ZERO_RANGE): 16 segments of 32 MiB.
 */
export const VIRTIO_BLK_MAX_DISCARD_SECTORS = 1 << 16;
export const VIRTIO_BLK_MAX_DISCARD_SEG = 16;
export const VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS = 1 << 16;
export const VIRTIO_BLK_MAX_WRITE_ZEROES_SEG = 16;
/** discard_sector_alignment: a host filesystem block (4 KiB) frees whole blocks. */
export const VIRTIO_BLK_DISCARD_SECTOR_ALIGNMENT = 8;
const HEADER_BYTES = 16;
const CONFIG_BYTES = 60;
/** Offsets in struct virtio_blk_config. */
const ConfigOffset = {
  capacity: 0, segMax: 12, blkSize: 20, maxDiscardSectors: 36, maxDiscardSeg: 40, discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48, maxWriteZeroesSeg: 52, writeZeroesMayUnmap: 56,
} as const;

export class BlockImageError extends Error {
  override name = "BlockImageError";
}

export interface VirtioBlkOptions {
  /** A raw disk image; its size is rounded down to whole 512-byte sectors. */
  path: string;
  readOnly?: boolean;
  /** What GET_ID returns: up to 20 bytes of ASCII. */
  serial?: string;
  /**
   * Offer DISCARD and WRITE_ZEROES when the image allows (writable, on a filesystem that can
   * punch holes). Default true.
   */
  discard?: boolean;
}

export interface VirtioBlkStats {
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
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
  readonly stats: VirtioBlkStats = { reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, failed: 0 };
  /** DISCARD and WRITE_ZEROES are offered (the image can punch holes). */
  readonly offersDiscard: boolean;
  private readonly serial: Uint8Array;
  private fd: number | undefined;
  private readonly space: ImageSpace | undefined;
  private readonly header = new Uint8Array(HEADER_BYTES);
  private readonly headerView = new DataView(this.header.buffer);
  /** Room for one more segment than allowed, so that one too many is seen. */
  private readonly segments = new Uint8Array(DISCARD_SEGMENT_BYTES * (Math.max(VIRTIO_BLK_MAX_DISCARD_SEG, VIRTIO_BLK_MAX_WRITE_ZEROES_SEG) + 1));
  private readonly segmentsView = new DataView(this.segments.buffer);
  /** Bytes the request being served wrote into the driver's buffers. */
  private written = 0;

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
    try {
      this.space = this.readOnly || options.discard === false ? undefined : new ImageSpace(this.fd, size);
    } catch (error) {
      this.close();
      throw new BlockImageError(`cannot probe the block image ${options.path} for hole punching: ${(error as Error).message}`, { cause: error });
    }
    this.offersDiscard = this.space?.canPunchHoles ?? false;
    this.features = featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE) | featureBit(VIRTIO_BLK_F_FLUSH) |
      (this.readOnly ? featureBit(VIRTIO_BLK_F_RO) : 0n) |
      (this.offersDiscard ? featureBit(VIRTIO_BLK_F_DISCARD) | featureBit(VIRTIO_BLK_F_WRITE_ZEROES) : 0n);
    const config = new DataView(this.config.buffer);
    config.setBigUint64(ConfigOffset.capacity, BigInt(this.capacityBytes / SECTOR_SIZE), true);
    config.setUint32(ConfigOffset.segMax, VIRTIO_BLK_SEG_MAX, true);
    config.setUint32(ConfigOffset.blkSize, SECTOR_SIZE, true);
    if (this.offersDiscard) {
      config.setUint32(ConfigOffset.maxDiscardSectors, VIRTIO_BLK_MAX_DISCARD_SECTORS, true);
      config.setUint32(ConfigOffset.maxDiscardSeg, VIRTIO_BLK_MAX_DISCARD_SEG, true);
      config.setUint32(ConfigOffset.discardSectorAlignment, VIRTIO_BLK_DISCARD_SECTOR_ALIGNMENT, true);
      config.setUint32(ConfigOffset.maxWriteZeroesSectors, VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS, true);
      config.setUint32(ConfigOffset.maxWriteZeroesSeg, VIRTIO_BLK_MAX_WRITE_ZEROES_SEG, true);
      config.setUint8(ConfigOffset.writeZeroesMayUnmap, 1); // WRITE_ZEROES with UNMAP punches a hole
    }
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
      const statusSegment = lastNonEmpty(chain.writable);
      if (statusSegment === undefined) {
        context.needsReset(`request ${chain.head} has no device-writable byte for its status`);
        return;
      }
      // Nothing allocated per request: serve() answers the status and leaves the bytes it
      // filled in `written`.
      this.written = 0;
      let status: number;
      try {
        status = this.serve(chain, chain.writableLength - 1, context.features);
      } catch {
        status = VirtioBlkStatus.IOERR; // the host file failed (EIO, short file)
        this.written = 0;
      }
      if (status !== VirtioBlkStatus.OK) this.stats.failed++;
      statusSegment[statusSegment.length - 1] = status;
      queue.pushUsed(chain.head, this.written + 1);
    }
  }

  reset(): void {}

  /** Serves one request: its status; what it wrote into the chain's buffers goes to `written`. */
  private serve(chain: DescriptorChain, inLength: number, features: bigint): number {
    const fail = VirtioBlkStatus.IOERR;
    if (gather(chain.readable, this.header) < HEADER_BYTES || this.fd === undefined) return fail;
    const type = this.headerView.getUint32(0, true);
    const sector = this.headerView.getBigUint64(8, true);
    switch (type) {
      case VirtioBlkRequest.IN: {
        const position = this.range(sector, inLength);
        if (position === undefined) return fail;
        this.stats.reads++;
        this.written = this.transfer(chain.writable, inLength, position, "read");
        return VirtioBlkStatus.OK;
      }
      case VirtioBlkRequest.OUT: {
        const outLength = chain.readableLength - HEADER_BYTES;
        const position = this.range(sector, outLength);
        if (this.readOnly || position === undefined) return fail;
        this.stats.writes++;
        this.transfer(chain.readable, outLength, position, "write", HEADER_BYTES);
        return VirtioBlkStatus.OK;
      }
      case VirtioBlkRequest.FLUSH:
        this.stats.flushes++;
        try {
          fsyncSync(this.fd);
        } catch {
          return fail;
        }
        return VirtioBlkStatus.OK;
      case VirtioBlkRequest.GET_ID: {
        const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
        id.set(this.serial);
        this.written = scatter(chain.writable, id.subarray(0, Math.min(inLength, VIRTIO_BLK_ID_BYTES)));
        return VirtioBlkStatus.OK;
      }
      case VirtioBlkRequest.DISCARD:
      case VirtioBlkRequest.WRITE_ZEROES:
        return this.discardOrZero(chain, type, features);
      default:
        return VirtioBlkStatus.UNSUPP;
    }
  }

  /**
   * DISCARD or WRITE_ZEROES (section 5.2.6): every segment is checked before any is applied,
   * so a refused request changes nothing. UNSUPP for a feature not negotiated, a reserved
   * flag, UNMAP on a discard (the spec's MUSTs) and more segments than offered (as QEMU);
   * IOERR for a segment list that is not whole segments, a count over the maximum or a range
   * past the end of the image.
   */
  private discardOrZero(chain: DescriptorChain, type: number, features: bigint): number {
    const discard = type === VirtioBlkRequest.DISCARD;
    const feature = discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES;
    if (this.space === undefined || !this.offersDiscard || (features & featureBit(feature)) === 0n) return VirtioBlkStatus.UNSUPP;
    const bytes = chain.readableLength - HEADER_BYTES;
    if (bytes <= 0 || bytes % DISCARD_SEGMENT_BYTES !== 0) return VirtioBlkStatus.IOERR;
    const count = bytes / DISCARD_SEGMENT_BYTES;
    const maxSegments = discard ? VIRTIO_BLK_MAX_DISCARD_SEG : VIRTIO_BLK_MAX_WRITE_ZEROES_SEG;
    if (count > maxSegments) return VirtioBlkStatus.UNSUPP;
    const segmentBytes = this.segments.subarray(0, bytes);
    gather(chain.readable, segmentBytes, HEADER_BYTES);
    const view = this.segmentsView;
    const maxSectors = discard ? VIRTIO_BLK_MAX_DISCARD_SECTORS : VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS;
    for (let i = 0; i < count; i++) {
      const at = i * DISCARD_SEGMENT_BYTES;
      const flags = view.getUint32(at + 12, true);
      if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (discard && flags !== 0)) return VirtioBlkStatus.UNSUPP;
    }
    for (let i = 0; i < count; i++) {
      const at = i * DISCARD_SEGMENT_BYTES;
      const sectors = view.getUint32(at + 8, true);
      if (sectors > maxSectors || this.range(view.getBigUint64(at, true), sectors * SECTOR_SIZE) === undefined) return VirtioBlkStatus.IOERR;
    }
    try {
      for (let i = 0; i < count; i++) {
        const at = i * DISCARD_SEGMENT_BYTES;
        const length = view.getUint32(at + 8, true) * SECTOR_SIZE;
        if (length === 0) continue;
        const position = Number(view.getBigUint64(at, true)) * SECTOR_SIZE;
        if (discard || view.getUint32(at + 12, true) & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) this.space.punch(position, length);
        else this.space.zero(position, length);
      }
    } catch {
      return VirtioBlkStatus.IOERR; // the host file failed (EIO, ENOSPC for ZERO_RANGE)
    }
    if (discard) this.stats.discards++;
    else this.stats.writeZeroes++;
    return VirtioBlkStatus.OK;
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

/**
 * The bytes of the last non-empty writable buffer, whose last byte is the status; every
 * writable byte before it is data (empty buffers after it hold nothing).
 */
function lastNonEmpty(writable: readonly BufferSegment[]): Uint8Array | undefined {
  for (let i = writable.length - 1; i >= 0; i--) {
    if (writable[i].bytes.length > 0) return writable[i].bytes;
  }
  return undefined;
}
