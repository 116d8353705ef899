import { allOnes, type AccessSize, type Device, type HighWord, type InterruptLine } from "./device.js";

/**
 * A 16550A UART as wired on a PC COM port: eight byte-wide registers, a 16-byte receive FIFO,
 * and an interrupt output that reaches the interrupt controller only while MCR OUT2 is set.
 *
 * Transmission is instant: a THR write hands the byte to the host sink at once, so the
 * transmitter is always empty (LSR THRE|TEMT) and the THR-empty interrupt re-arms after every
 * write. There is no baud-rate clock, so the FIFO's character timeout counts as already expired
 * whenever the guest looks (see `interruptId`).
 */

// Register offsets (with DLAB, offsets 0 and 1 are the divisor latch).
const RBR_THR_DLL = 0;
const IER_DLM = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;
const REGISTER_COUNT = 8;

const IER_ERBFI = 0x01; // received data available
const IER_ETBEI = 0x02; // transmitter holding register empty
const IER_ELSI = 0x04; // receiver line status
const IER_EDSSI = 0x08; // modem status
const IER_MASK = 0x0f;

const IIR_NONE = 0x01;
const IIR_MODEM_STATUS = 0x00;
const IIR_THR_EMPTY = 0x02;
const IIR_RX_DATA = 0x04;
const IIR_LINE_STATUS = 0x06;
const IIR_RX_TIMEOUT = 0x0c;
const IIR_FIFOS_ENABLED = 0xc0;

const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
// FCR bit 2 clears the transmit FIFO, which is always empty here; bit 3 selects DMA mode,
// which has no meaning without a DMA controller.

const LCR_WORD_LENGTH = 0x03;
const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MCR_MASK = 0x1f; // bits 5..7 read as zero on a 16550A

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
// PE (0x04), FE (0x08), BI (0x10) and the FIFO error summary (0x80) need a real line to go
// wrong; host input arrives as clean bytes, so only overrun is ever raised.
const LSR_ERRORS = 0x1e;

const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

const FIFO_SIZE = 16;
const FIFO_INDEX_MASK = FIFO_SIZE - 1;
/** Receive trigger levels selected by FCR bits 7..6 (16550A datasheet, FCR description). */
const RX_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

/** 1.8432 MHz / 16 / 12 = 9600 baud; the latch has no reset value, this is what a BIOS leaves. */
const DEFAULT_DIVISOR = 12;

export interface Serial16550Options {
  /** Receives each transmitted byte (0..255), synchronously, in order. */
  output: (byte: number) => void;
  /** Driven as a level: high iff an enabled cause is pending and MCR OUT2 is set. */
  irq?: InterruptLine;
  /** Device name on the bus; defaults to "serial-16550". */
  name?: string;
  /**
   * Called when the receiver becomes empty and open to host input again: the guest read the
   * last queued byte, a FIFO reset emptied it, or the guest left loopback mode. A host that
   * holds back input beyond `rxSpace()` pushes more from here.
   */
  onRxDrained?: () => void;
  /**
   * Called with the unread bytes a FIFO reset or mode change threw away. A host that must
   * not lose input (a pipe) queues them again; a host modelling a real line ignores it.
   */
  onRxDiscarded?: (bytes: Uint8Array) => void;
}

/** The four modem-status inputs, as seen on a connected cable (true = asserted). */
export interface ModemInputs {
  cts: boolean;
  dsr: boolean;
  ri: boolean;
  dcd: boolean;
}

export class Serial16550 implements Device {
  readonly name: string;

  readonly #output: (byte: number) => void;
  readonly #irq: InterruptLine | undefined;
  readonly #onRxDrained: (() => void) | undefined;
  readonly #onRxDiscarded: ((bytes: Uint8Array) => void) | undefined;

  #ier = 0;
  #lcr = 0;
  #mcr = 0;
  #scr = 0;
  #dll = DEFAULT_DIVISOR;
  #dlm = 0;

  #fifoEnabled = false;
  #rxTrigger = 1;
  readonly #rx = new Uint8Array(FIFO_SIZE);
  #rxHead = 0;
  #rxCount = 0;
  /** What RBR returns when nothing is queued: the last byte the guest read, as on hardware. */
  #rbr = 0;

  /** Sticky LSR error bits, cleared by reading LSR. */
  #lsrErrors = 0;
  #thrEmptyPending = false;

  /** Modem inputs from the host side (MSR bits 7..4), used outside loopback. */
  #externalLines = MSR_CTS | MSR_DSR | MSR_DCD;
  /** MSR bits 7..4 as the guest currently sees them. */
  #msrLines = 0;
  /** MSR delta bits 3..0, cleared by reading MSR. */
  #msrDeltas = 0;

  #irqLevel = false;
  #overruns = 0;

  constructor(options: Serial16550Options) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("Serial16550: options must be an object like { output: (byte) => void }");
    }
    if (typeof options.output !== "function") {
      throw new TypeError(
        "Serial16550: options.output must be a function (byte: number) => void that receives transmitted bytes",
      );
    }
    if (options.irq !== undefined && (options.irq === null || typeof options.irq.set !== "function")) {
      throw new TypeError("Serial16550: options.irq must be an InterruptLine with a set(level) method, or omitted");
    }
    if (options.name !== undefined && (typeof options.name !== "string" || options.name.length === 0)) {
      throw new TypeError("Serial16550: options.name must be a non-empty string, or omitted");
    }
    if (options.onRxDrained !== undefined && typeof options.onRxDrained !== "function") {
      throw new TypeError("Serial16550: options.onRxDrained must be a function, or omitted");
    }
    this.name = options.name ?? "serial-16550";
    this.#output = options.output;
    this.#irq = options.irq;
    this.#onRxDrained = options.onRxDrained;
    if (options.onRxDiscarded !== undefined && typeof options.onRxDiscarded !== "function") {
      throw new TypeError("Serial16550: options.onRxDiscarded must be a function, or omitted");
    }
    this.#onRxDiscarded = options.onRxDiscarded;
    this.reset();
    // 8N1, as PC firmware leaves COM1: guests that never program the UART still send 8-bit bytes.
    this.#lcr = 0x03;
  }

  /** Bytes lost because the receiver was full (each one also set LSR OE). */
  get overruns(): number {
    return this.#overruns;
  }

  /**
   * Master reset (datasheet MR pin): IER, IIR, FCR, LCR, MCR, LSR and the MSR deltas return to
   * their reset values and the FIFOs are emptied. The divisor latch and SCR are untouched, as on
   * the chip; so is the `overruns` count, which belongs to the host.
   */
  reset(): void {
    this.#ier = 0;
    this.#lcr = 0;
    this.#mcr = 0;
    this.#fifoEnabled = false;
    this.#rxTrigger = 1;
    this.#rxHead = 0;
    this.#rxCount = 0;
    this.#lsrErrors = 0;
    this.#thrEmptyPending = false;
    this.#msrLines = this.#externalLines;
    this.#msrDeltas = 0;
    this.#updateIrq();
  }

  /**
   * Queues host input for the guest. Bytes that find the receiver full are lost and raise LSR
   * OE: in FIFO mode the new byte is dropped (the FIFO keeps its contents); in 16450 mode the
   * new byte overwrites the unread one in RBR, as the datasheet describes. In loopback mode the
   * receiver is disconnected from the line and host input is discarded.
   */
  receive(bytes: Uint8Array | readonly number[]): void {
    if ((this.#mcr & MCR_LOOP) !== 0) return;
    for (let i = 0; i < bytes.length; i++) this.#receiveByte(bytes[i]!);
    this.#updateIrq();
  }

  /** How many bytes `receive` can take now without loss (0 in loopback mode). */
  rxSpace(): number {
    if ((this.#mcr & MCR_LOOP) !== 0) return 0;
    return this.#rxCapacity() - this.#rxCount;
  }

  /** Sets the modem-status inputs the guest sees in MSR (outside loopback mode). */
  setModemInputs(lines: ModemInputs): void {
    this.#externalLines =
      (lines.cts ? MSR_CTS : 0) | (lines.dsr ? MSR_DSR : 0) | (lines.ri ? MSR_RI : 0) | (lines.dcd ? MSR_DCD : 0);
    this.#refreshModemLines();
    this.#updateIrq();
  }

  read(offset: number, size: AccessSize, wide: HighWord): number {
    if (!isRegisterOffset(offset)) return allOnes(size, wide);
    return this.#readRegister(offset);
  }

  write(offset: number, _size: AccessSize, value: number): void {
    if (!isRegisterOffset(offset)) return;
    this.#writeRegister(offset, value & 0xff);
  }

  #readRegister(offset: number): number {
    switch (offset) {
      case RBR_THR_DLL:
        return (this.#lcr & LCR_DLAB) !== 0 ? this.#dll : this.#readRbr();
      case IER_DLM:
        return (this.#lcr & LCR_DLAB) !== 0 ? this.#dlm : this.#ier;
      case IIR_FCR:
        return this.#readIir();
      case LCR:
        return this.#lcr;
      case MCR:
        return this.#mcr;
      case LSR:
        return this.#readLsr();
      case MSR:
        return this.#readMsr();
      case SCR:
      default:
        return this.#scr;
    }
  }

  #writeRegister(offset: number, byte: number): void {
    switch (offset) {
      case RBR_THR_DLL:
        if ((this.#lcr & LCR_DLAB) !== 0) this.#dll = byte;
        else this.#transmit(byte);
        return;
      case IER_DLM:
        if ((this.#lcr & LCR_DLAB) !== 0) this.#dlm = byte;
        else this.#writeIer(byte);
        return;
      case IIR_FCR:
        this.#writeFcr(byte);
        return;
      case LCR:
        this.#lcr = byte;
        return;
      case MCR:
        this.#writeMcr(byte);
        return;
      case LSR:
      case MSR:
        return; // read-only
      case SCR:
      default:
        this.#scr = byte;
    }
  }

  #readRbr(): number {
    if (this.#rxCount === 0) return this.#rbr;
    this.#rbr = this.#rx[this.#rxHead]!;
    this.#rxHead = (this.#rxHead + 1) & FIFO_INDEX_MASK;
    this.#rxCount--;
    this.#updateIrq();
    if (this.#rxCount === 0) this.#notifyDrained();
    return this.#rbr;
  }

  #readIir(): number {
    const id = this.#interruptId();
    // Reading IIR acknowledges a THR-empty interrupt, but only when it is the one reported.
    if (id === IIR_THR_EMPTY) {
      this.#thrEmptyPending = false;
      this.#updateIrq();
    }
    return this.#fifoEnabled ? id | IIR_FIFOS_ENABLED : id;
  }

  #readLsr(): number {
    const value = (this.#rxCount > 0 ? LSR_DR : 0) | this.#lsrErrors | LSR_THRE | LSR_TEMT;
    if (this.#lsrErrors !== 0) {
      this.#lsrErrors = 0;
      this.#updateIrq();
    }
    return value;
  }

  #readMsr(): number {
    const value = this.#msrLines | this.#msrDeltas;
    if (this.#msrDeltas !== 0) {
      this.#msrDeltas = 0;
      this.#updateIrq();
    }
    return value;
  }

  #transmit(byte: number): void {
    const data = byte & this.#wordMask();
    if ((this.#mcr & MCR_LOOP) !== 0) this.#receiveByte(data);
    else this.#output(data);
    // The byte left THR at once, so THR is empty again and the interrupt the write cleared
    // is pending anew.
    this.#thrEmptyPending = true;
    this.#updateIrq();
  }

  #writeIer(byte: number): void {
    const enabling = ~this.#ier & byte & IER_ETBEI;
    this.#ier = byte & IER_MASK;
    // A 16550A raises THR empty when ETBEI goes 0 -> 1 with the transmitter idle; Linux's
    // 8250 driver relies on this to start transmission (and probes for it, UART_BUG_THRE).
    if (enabling !== 0) this.#thrEmptyPending = true;
    this.#updateIrq();
  }

  #writeFcr(byte: number): void {
    const enable = (byte & FCR_ENABLE) !== 0;
    let drained = false;
    if (enable !== this.#fifoEnabled) {
      // Changing FCR0 empties both FIFOs (datasheet, FCR bit 0).
      this.#fifoEnabled = enable;
      drained = this.#clearRx();
    }
    // The other FCR bits are only programmed while FCR0 is written as 1.
    if (enable) {
      if ((byte & FCR_CLEAR_RX) !== 0) drained = this.#clearRx() || drained;
      this.#rxTrigger = RX_TRIGGER_LEVELS[byte >> 6]!;
    }
    this.#updateIrq();
    if (drained) this.#notifyDrained();
  }

  #writeMcr(byte: number): void {
    const wasLoop = (this.#mcr & MCR_LOOP) !== 0;
    this.#mcr = byte & MCR_MASK;
    this.#refreshModemLines();
    this.#updateIrq();
    if (wasLoop && (this.#mcr & MCR_LOOP) === 0 && this.#rxCount === 0) this.#notifyDrained();
  }

  #receiveByte(byte: number): void {
    const data = byte & this.#wordMask();
    if (this.#rxCount < this.#rxCapacity()) {
      this.#rx[(this.#rxHead + this.#rxCount) & FIFO_INDEX_MASK] = data;
      this.#rxCount++;
      return;
    }
    this.#lsrErrors |= LSR_OE;
    this.#overruns++;
    // Without FIFOs the new character lands in RBR, destroying the unread one.
    if (!this.#fifoEnabled) this.#rx[this.#rxHead] = data;
  }

  /** Returns whether the receiver held data that was discarded. */
  #clearRx(): boolean {
    const hadData = this.#rxCount > 0;
    if (hadData && this.#onRxDiscarded !== undefined) {
      const lost = new Uint8Array(this.#rxCount);
      for (let i = 0; i < lost.length; i++) lost[i] = this.#rx[(this.#rxHead + i) & FIFO_INDEX_MASK]!;
      this.#onRxDiscarded(lost);
    }
    this.#rxHead = 0;
    this.#rxCount = 0;
    return hadData;
  }

  #rxCapacity(): number {
    return this.#fifoEnabled ? FIFO_SIZE : 1;
  }

  /** Data bits per character from LCR; a shorter frame cannot carry the high bits. */
  #wordMask(): number {
    return (1 << (5 + (this.#lcr & LCR_WORD_LENGTH))) - 1;
  }

  #notifyDrained(): void {
    if (this.#onRxDrained !== undefined && (this.#mcr & MCR_LOOP) === 0) this.#onRxDrained();
  }

  /**
   * Recomputes the MSR status bits and latches the deltas. In loopback the inputs are wired to
   * the MCR outputs: RTS -> CTS, DTR -> DSR, OUT1 -> RI, OUT2 -> DCD.
   */
  #refreshModemLines(): void {
    const mcr = this.#mcr;
    const lines =
      (mcr & MCR_LOOP) !== 0
        ? ((mcr & MCR_RTS) !== 0 ? MSR_CTS : 0) |
          ((mcr & MCR_DTR) !== 0 ? MSR_DSR : 0) |
          ((mcr & MCR_OUT1) !== 0 ? MSR_RI : 0) |
          ((mcr & MCR_OUT2) !== 0 ? MSR_DCD : 0)
        : this.#externalLines;
    const changed = lines ^ this.#msrLines;
    if ((changed & MSR_CTS) !== 0) this.#msrDeltas |= MSR_DCTS;
    if ((changed & MSR_DSR) !== 0) this.#msrDeltas |= MSR_DDSR;
    if ((changed & MSR_DCD) !== 0) this.#msrDeltas |= MSR_DDCD;
    // TERI latches only the trailing edge of RI (asserted -> released).
    if ((changed & this.#msrLines & MSR_RI) !== 0) this.#msrDeltas |= MSR_TERI;
    this.#msrLines = lines;
  }

  /** The highest-priority enabled cause, as IIR bits 3..0 (16550A datasheet, IIR table). */
  #interruptId(): number {
    const ier = this.#ier;
    if ((ier & IER_ELSI) !== 0 && (this.#lsrErrors & LSR_ERRORS) !== 0) return IIR_LINE_STATUS;
    if ((ier & IER_ERBFI) !== 0 && this.#rxCount > 0) {
      // Below the trigger level a FIFO reports a character timeout after four idle character
      // times; with no line clock that time has always passed by the time the guest looks.
      return this.#fifoEnabled && this.#rxCount < this.#rxTrigger ? IIR_RX_TIMEOUT : IIR_RX_DATA;
    }
    if ((ier & IER_ETBEI) !== 0 && this.#thrEmptyPending) return IIR_THR_EMPTY;
    if ((ier & IER_EDSSI) !== 0 && this.#msrDeltas !== 0) return IIR_MODEM_STATUS;
    return IIR_NONE;
  }

  #updateIrq(): void {
    // On a PC the UART's INTR pin reaches the PIC through a buffer enabled by OUT2.
    const level = (this.#mcr & MCR_OUT2) !== 0 && this.#interruptId() !== IIR_NONE;
    if (level === this.#irqLevel) return;
    this.#irqLevel = level;
    this.#irq?.set(level);
  }
}

function isRegisterOffset(offset: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && offset < REGISTER_COUNT;
}
