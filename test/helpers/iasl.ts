/**
 * ACPICA's iasl (Debian package acpica-tools), the reference the AML encoder and the DSDT
 * are checked against: compile ASL to AML, disassemble AML to ASL.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TABLE_HEADER_LENGTH = 36;

/** Why the iasl tests cannot run here, or undefined when iasl is on PATH. */
export const iaslMissing: string | undefined =
  spawnSync("iasl", ["-v"], { stdio: "ignore" }).error === undefined ? undefined : "iasl is not installed (apt-get install acpica-tools)";

function inTempDir<T>(work: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-iasl-"));
  try {
    return work(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The AML iasl makes of `body` inside a revision-1 DSDT, without the table header; names are kept as written (-on). */
export function compileAsl(body: string): Uint8Array {
  return inTempDir((dir) => {
    const source = join(dir, "snippet.asl");
    writeFileSync(source, `DefinitionBlock ("", "DSDT", 1, "WRKVSR", "WORKVISR", 1)\n{\n${body}\n}\n`);
    try {
      execFileSync("iasl", ["-on", "-p", join(dir, "snippet"), source], { stdio: ["ignore", "pipe", "pipe"] });
    } catch (error) {
      const out = (error as { stdout?: Buffer }).stdout?.toString() ?? "";
      throw new Error(`iasl rejected the snippet:\n${body}\n${out}`);
    }
    return new Uint8Array(readFileSync(join(dir, "snippet.aml"))).subarray(TABLE_HEADER_LENGTH);
  });
}

/** iasl -d of a whole table: its exit status, its messages and the ASL it wrote. */
export function disassembleAml(table: Uint8Array): { status: number | null; output: string; asl: string } {
  return inTempDir((dir) => {
    const file = join(dir, "dsdt.aml");
    writeFileSync(file, table);
    const run = spawnSync("iasl", ["-d", file], { cwd: dir, encoding: "utf8" });
    let asl = "";
    try {
      asl = readFileSync(join(dir, "dsdt.dsl"), "utf8");
    } catch {
      // No output file: the status and messages say why.
    }
    return { status: run.status, output: `${run.stdout}${run.stderr}`, asl };
  });
}
