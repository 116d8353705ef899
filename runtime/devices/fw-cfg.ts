import { toUnsigned, type AccessSize, type Device } from "./device.js";

/**
 * QEMU's firmware configuration device, traditional (non-DMA) I/O interface, as
 * described in QEMU's docs/specs/fw_cfg.rst. The bus maps it at port 0x510, length 2:
 *
 *   offset 0 (0x510)  selector, 16-bit write: picks an item and rewinds it to byte 0
 *   offset 1 (0x511)  data, 8-bit read: the next byte of the selected item
 *
 * Reading past the end of an item, or reading an item that does not exist, returns 0.
 * Guests such as kvm-unit-tests use it to learn the CPU count and RAM size.
 */

export const FW_CFG_PORT = 0x510;
export const FW_CFG_PORT_LENGTH = 2;

/** Item keys (selector values) from the fw_cfg specification. */
export const FwCfgKey = {
  SIGNATURE: 0x00,
  ID: 0x01,
  RAM_SIZE: 0x03,
  NB_CPUS: 0x05,
  MAX_CPUS: 0x0f,
} as const;

/** FW_CFG_ID feature bits: bit 0 is the traditional interface; bit 1 (DMA) we do not offer. */
const FW_CFG_ID_TRADITIONAL = 1;

const SELECTOR_OFFSET = 0;
const DATA_OFFSET = 1;

/** Bad options or item given to FwCfg by the caller. */
export class FwCfgConfigError extends Error {
  override name = "FwCfgConfigError";
}

export interface FwCfgOptions {
  /** Number of vCPUs; reported as both FW_CFG_NB_CPUS and FW_CFG_MAX_CPUS (1..65535). */
  cpus: number;
  /** Guest RAM size in bytes, reported as FW_CFG_RAM_SIZE. */
  ramSize: number;
}

function littleEndian(value: bigint, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = Number((value >> BigInt(i * 8)) & 0xffn);
  return out;
}

const EMPTY = new Uint8Array(0);

export class FwCfg implements Device {
  readonly name = "fw-cfg";

  private readonly items = new Map<number, Uint8Array>();
  private selectedKey = 0;
  private selected: Uint8Array = EMPTY;
  private position = 0;

  constructor(options: FwCfgOptions) {
    const { cpus, ramSize } = options;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 0xffff) {
      throw new FwCfgConfigError(`fw_cfg: cpus must be a whole number from 1 to 65535, got ${cpus}`);
    }
    if (!Number.isSafeInteger(ramSize) || ramSize < 0) {
      throw new FwCfgConfigError(`fw_cfg: ramSize must be a non-negative whole number of bytes, got ${ramSize}`);
    }
    this.setItem(FwCfgKey.SIGNATURE, new TextEncoder().encode("QEMU"));
    this.setItem(FwCfgKey.ID, littleEndian(BigInt(FW_CFG_ID_TRADITIONAL), 4));
    this.setItem(FwCfgKey.RAM_SIZE, littleEndian(BigInt(ramSize), 8));
    this.setItem(FwCfgKey.NB_CPUS, littleEndian(BigInt(cpus), 2));
    this.setItem(FwCfgKey.MAX_CPUS, littleEndian(BigInt(cpus), 2));
    this.select(FwCfgKey.SIGNATURE);
  }

  /** Adds or replaces the item at `key` (0..0xffff); the bytes are copied. */
  setItem(key: number, bytes: ArrayLike<number>): void {
    if (!Number.isInteger(key) || key < 0 || key > 0xffff) {
      throw new FwCfgConfigError(`fw_cfg: key must be a 16-bit selector value, got ${key}`);
    }
    const copy = Uint8Array.from(bytes);
    this.items.set(key, copy);
    if (key === this.selectedKey) this.selected = copy;
  }

  /** The currently selected key (as last written to the selector). */
  get selector(): number {
    return this.selectedKey;
  }

  read(offset: number, size: AccessSize): number {
    if (offset === DATA_OFFSET && size === 1) {
      const position = this.position;
      if (position >= this.selected.length) return 0;
      this.position = position + 1;
      return this.selected[position];
    }
    // The selector is write-only and the data register is byte-wide; anything else
    // reads as 0 and does not move the data position.
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset === SELECTOR_OFFSET && size === 2) this.select(toUnsigned(value, 2));
    // Writes through the data register were dropped from the interface (QEMU 2.4);
    // they and any other access width are ignored.
  }

  private select(key: number): void {
    this.selectedKey = key;
    this.selected = this.items.get(key) ?? EMPTY;
    this.position = 0;
  }
}
