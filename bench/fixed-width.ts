/**
 * Numbers and prose laid out for the bench's plain-text reports, which promise a width.
 * A number always fits its cell and stays readable: fewer decimals first, then k/M/G/T
 * units, then an exponent, and only past all of those a clamp that says so (`>999` for a
 * huge value, `<0.1` for a tiny one in a narrow cell).
 * Prose wraps at word boundaries; a word longer than a line is split, never cut off.
 */

/** Every line of a printed bench report is at most this many columns. */
export const REPORT_WIDTH = 100;

/** The narrowest cell a number may be given: room for "-inf". */
export const MIN_NUMBER_WIDTH = 4;

const UNITS = ["k", "M", "G", "T"] as const;

/** toExponential without the "+" of positive exponents: "2e6", not "2e+6". */
function exponential(value: number, digits: number): string {
  return value.toExponential(digits).replace("e+", "e");
}

/**
 * `value` in at most `width` characters, with up to `decimals` decimals:
 *   null/undefined → "-" (not measured), NaN → "NaN", ±Infinity → "inf"/"-inf";
 *   otherwise the first of these that fits: fixed point with `decimals` down to 0 decimals
 *   (never one that shows a non-zero value as 0), the same with a k/M/G/T unit, an
 *   exponent ("1.5e-6", "3e12"), and as a last resort a clamp (">9999", "<-999", "<0.1").
 */
export function fitNumber(value: number | null | undefined, width: number, decimals = 2): string {
  if (!Number.isInteger(width) || width < MIN_NUMBER_WIDTH) {
    throw new RangeError(`a number cell must be an integer of at least ${MIN_NUMBER_WIDTH} columns, got ${width}`);
  }
  if (value === null || value === undefined) return "-";
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "inf";
  if (value === -Infinity) return "-inf";
  if (Object.is(value, -0)) value = 0;
  for (let d = decimals; d >= 0; d--) {
    const text = value.toFixed(d);
    // toFixed switches to exponents itself at 1e21; those are handled below.
    if (text.length <= width && !text.includes("e") && (value === 0 || Number(text) !== 0)) return text;
  }
  let scaled = value;
  // With a unit, decimals are digits worth showing even in an integer column: "12.35M", not "12M".
  const unitDecimals = Math.max(decimals, 2);
  for (const unit of UNITS) {
    scaled /= 1000;
    if (Math.abs(scaled) < 1) break;
    for (let d = unitDecimals; d >= 0; d--) {
      const text = scaled.toFixed(d);
      // 999.96k would print as "1000.0k"; the next unit says it better.
      if (Math.abs(Number(text)) >= 1000) break;
      if (text.length + 1 <= width) return text + unit;
    }
  }
  for (let digits = Math.max(decimals, 1); digits >= 0; digits--) {
    const text = exponential(value, digits);
    // Rounding Number.MAX_VALUE up would print a number that reads back as Infinity.
    if (text.length <= width && Number.isFinite(Number(text))) return text;
  }
  return clamped(value, width);
}

/** The bound nearest to `value` that fits: ">999", "<-99" when huge; "<0.01", ">-0.1" when tiny. */
function clamped(value: number, width: number): string {
  const sign = value > 0 ? "" : "-";
  const room = width - 1 - sign.length;
  if (Math.abs(value) >= 1) return `${value > 0 ? ">" : "<"}${sign}${"9".repeat(room)}`;
  const smallest = room >= 3 ? `0.${"0".repeat(room - 3)}1` : "1";
  return `${value > 0 ? "<" : ">"}${sign}${smallest}`;
}

/** A percentage in at most `width` characters, the "%" included. */
export function fitPercent(value: number | null | undefined, width: number, decimals = 1): string {
  const text = fitNumber(value, width - 1, decimals);
  return text === "-" ? text : `${text}%`;
}

/**
 * `text` as lines of at most `width` columns, each starting with `indent` (the first with
 * `firstIndent`, when given). Words longer than a line are split across lines.
 */
export function wrapText(text: string, width = REPORT_WIDTH, indent = "", firstIndent = indent): string[] {
  const lines: string[] = [];
  let prefix = firstIndent;
  let current = "";
  const room = () => width - prefix.length;
  if (room() < 1 || width - indent.length < 1) throw new RangeError(`indent leaves no room in ${width} columns`);
  const flush = () => {
    lines.push(prefix + current);
    prefix = indent;
    current = "";
  };
  for (let word of text.split(/\s+/).filter((w) => w !== "")) {
    if (current !== "" && current.length + 1 + word.length > room()) flush();
    while (current === "" && word.length > room()) {
      current = word.slice(0, room());
      word = word.slice(current.length);
      flush();
    }
    if (word === "") continue;
    current = current === "" ? word : `${current} ${word}`;
  }
  if (current !== "" || lines.length === 0) lines.push(prefix + current);
  return lines;
}

/** A cell of a fixed-width table: its title, its width, and which side it is aligned to. */
export interface Column {
  title: string;
  width: number;
  left?: boolean;
}

/** Total width of `columns` joined by single spaces. */
export function tableWidth(columns: readonly Column[]): number {
  return columns.reduce((sum, c) => sum + c.width, 0) + columns.length - 1;
}

/**
 * One table line: each cell padded to its column. A cell wider than its column is a bug in
 * the caller (numbers go through fitNumber), so it is refused rather than printed crooked.
 */
export function tableLine(columns: readonly Column[], cells: readonly string[]): string {
  if (cells.length > columns.length) throw new RangeError(`${cells.length} cells for ${columns.length} columns`);
  return cells
    .map((text, i) => {
      const column = columns[i];
      if (text.length > column.width) {
        throw new RangeError(`'${text}' is ${text.length} characters, wider than the ${column.width} of column '${column.title}'`);
      }
      return column.left ? text.padEnd(column.width) : text.padStart(column.width);
    })
    .join(" ")
    .trimEnd();
}
