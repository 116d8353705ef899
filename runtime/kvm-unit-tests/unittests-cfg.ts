/**
 * kvm-unit-tests' `unittests.cfg` (the format `scripts/common.bash` reads): `[name]`
 * sections with `file`, `smp`, `test_args`, `qemu_params`/`extra_params` (one line or a
 * `"""` block), `groups`, `arch`, `machine`, `check`, `accel`, `timeout`, `disabled_if`.
 */

export interface UnitTestEntry {
  name: string;
  file: string;
  smp: number;
  /** The `-append` text, shell quoting removed; undefined when the entry has none. */
  testArgs?: string;
  /** The entry's QEMU options as words, shell quoting removed. */
  qemuParams: string[];
  groups: string[];
  arch?: string;
  machine?: string;
  /** `path=value` pairs that must hold on the host, or the entry is skipped. */
  check: string[];
  accel?: string;
  /** Seconds; undefined means the runner's default (90 s). */
  timeout?: number;
  disabledIf?: string;
}

export class UnitTestsConfigError extends Error {
  override name = "UnitTestsConfigError";
}

/** Splits shell words, honouring single and double quotes and backslashes (no expansion). */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && i + 1 < text.length) word += text[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote !== undefined) throw new UnitTestsConfigError(`unterminated ${quote} quote in '${text}'`);
  if (inWord) words.push(word);
  return words;
}

/** `90`, `90s`, `2m`, `1h` (GNU timeout's forms) in seconds. */
export function parseDuration(text: string, where: string): number {
  const match = /^(\d+(?:\.\d+)?)([smhd]?)$/.exec(text.trim());
  if (!match) throw new UnitTestsConfigError(`${where}: '${text}' is not a duration (examples: 90, 90s, 2m)`);
  const scale = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as "" | "s" | "m" | "h" | "d"];
  return Number(match[1]) * scale;
}

export function parseUnitTestsConfig(text: string, source = "unittests.cfg"): UnitTestEntry[] {
  const entries: UnitTestEntry[] = [];
  let current: UnitTestEntry | undefined;
  const lines = text.split("\n");
  const finish = () => {
    if (current === undefined) return;
    if (current.file === "") throw new UnitTestsConfigError(`${source}: [${current.name}] has no 'file ='`);
    entries.push(current);
  };
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].replace(/\r$/, "");
    const where = `${source}:${n + 1}`;
    if (/^\s*(#|$)/.test(line)) continue;
    const section = /^\[(.*)\]\s*$/.exec(line);
    if (section) {
      finish();
      current = { name: section[1], file: "", smp: 1, qemuParams: [], groups: [], check: [] };
      continue;
    }
    const pair = /^([a-z_]+)\s*=\s*(.*)$/.exec(line);
    if (!pair) throw new UnitTestsConfigError(`${where}: expected '[name]' or 'key = value', got '${line}'`);
    if (current === undefined) throw new UnitTestsConfigError(`${where}: '${pair[1]}' comes before any [name] section`);
    const [, key] = pair;
    let value = pair[2];
    if ((key === "qemu_params" || key === "extra_params") && value.startsWith('"""')) {
      // A block: everything up to the closing """.
      let block = value.slice(3);
      while (!block.includes('"""')) {
        if (++n >= lines.length) throw new UnitTestsConfigError(`${where}: ${key} block has no closing """`);
        block += "\n" + lines[n];
      }
      value = block.slice(0, block.indexOf('"""'));
    }
    switch (key) {
      case "file": current.file = value.trim(); break;
      case "smp": {
        const smp = Number(value.trim());
        // `smp = $MAX_SMP` and the like are shell expressions; run them on one vCPU's worth.
        current.smp = Number.isInteger(smp) && smp >= 1 ? smp : 1;
        break;
      }
      case "test_args": current.testArgs = shellWords(value).join(" "); break;
      case "qemu_params":
      case "extra_params": current.qemuParams = shellWords(value); break;
      case "groups": current.groups = value.trim().split(/\s+/).filter(Boolean); break;
      case "arch": current.arch = value.trim(); break;
      case "machine": current.machine = value.trim(); break;
      case "check": current.check = value.trim().split(/\s+/).filter(Boolean); break;
      case "accel": current.accel = value.trim(); break;
      case "timeout": current.timeout = parseDuration(value, where); break;
      case "disabled_if": current.disabledIf = value.trim(); break;
      default: break; // keys this runner does not use (future ones) are ignored, as common.bash does
    }
  }
  finish();
  return entries;
}
