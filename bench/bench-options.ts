/** `workervisor bench` options: parsing, validation and the quick/default presets. */
import { parseArgs } from "node:util";
import { DEFAULT_DISPATCHER_OPTIONS, type DispatcherOptions } from "../runtime/dispatcher.js";
import { DEFAULT_SPIN, type SpinPolicy } from "../memory/waiter.js";
import {
  ALL_JS_PATHS, ALL_KINDS, ALL_PRIVILEGES, DEFAULT_PLAN, type ExitKindName, type GuestPrivilege, type JsPath,
  type PlanOptions,
} from "./figures.js";

export const BENCH_USAGE = `usage: workervisor bench [options]

Measures VM exit latency for every exit kind and dispatch path, against a C program doing
the same exit loop with raw ioctls (built with cc) and QEMU when installed.

selection
  --kinds LIST         exit kinds (default: all)
                       ${ALL_KINDS.slice(0, 5).join(", ")},
                       ${ALL_KINDS.slice(5).join(", ")}
  --paths LIST         JS dispatch paths (default: all)
                       ${ALL_JS_PATHS.join(", ")}
  --privilege LIST     guest privilege: cpl0, cpl3 (default: both)
  --vcpus LIST         vCPU counts for the scaling figures (default: 1,2,4)
  --scaling-kinds LIST kinds measured at every vCPU count (default: pio-write; pio-read
                       scales on the main-sync path only, unless left out of LIST)
  --no-c               skip the C baseline
  --no-qemu            skip the QEMU peer
  --qemu BINARY        QEMU to use (default: qemu-system-x86_64 on PATH)
  --no-start           skip the VM start figures
  --no-idle            skip the idle-VM figures (main-thread wake-ups, ~1.5 s each)
  --no-vmexit          skip kvm-unit-tests' vmexit kernel (workervisor beside QEMU;
                       --quick runs 3 of its 7 subtests)

length
  --quick              a run of about two minutes that still measures every default figure
                       (2 interleaved rounds instead of 3)
  --iterations N       measured exits per vCPU per run (sets the batch count)
  --batches N          measured batches per run
  --ops-per-batch K    exits between two markers (default 16; 64 for cpuid and ioeventfd)
  --warmup N           warm-up batches per run
  --calibration N      marker-only calibration rounds per run
  --repeats N          runs per figure (the spread is between them)
  --start-samples N    VMs started per VM start figure

runtime tuning (reported with every figure)
  --spin-min N, --spin-max N   exit-channel spin bounds, iterations
  --spin-yields N              core yields (sched_yield) after the spin, before a worker parks
  --dispatcher-spin-us N       main-thread poll time after the last exit
  --ring N                     posted-ring records per vCPU (power of two)

output
  --json FILE          write every figure, with raw samples, as JSON
  --svg FILE           write the latency plot as SVG
  --from FILE          measure nothing: print the table (and --svg) of an earlier --json
  -h, --help           this text
`;

export interface BenchOptions {
  plan: PlanOptions;
  quick: boolean;
  /** Measured batches per run, unless `iterations` is set. */
  measuredBatches: number;
  iterations: number | undefined;
  /** K override; undefined: per kind (16, or 64 for kinds KVM handles itself). */
  opsPerBatch: number | undefined;
  warmupBatches: number;
  calibrationRounds: number;
  repeats: number;
  startSamples: number;
  c: boolean;
  qemu: boolean;
  qemuBinary: string | undefined;
  start: boolean;
  idle: boolean;
  vmexit: boolean;
  spin: SpinPolicy;
  dispatcher: DispatcherOptions;
  ringCapacity: number;
  json: string | undefined;
  svg: string | undefined;
  from: string | undefined;
  help: boolean;
  /** The arguments as given, for the report. */
  argv: string[];
}

export class BenchUsageError extends Error {
  override name = "BenchUsageError";
}

const PRESETS = {
  default: { measuredBatches: 2000, warmupBatches: 100, calibrationRounds: 400, repeats: 3, startSamples: 20 },
  quick: { measuredBatches: 300, warmupBatches: 20, calibrationRounds: 120, repeats: 2, startSamples: 5 },
} as const;

function list<T extends string>(value: string | undefined, allowed: readonly T[], option: string): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const item of items) {
    if (!allowed.includes(item as T)) throw new BenchUsageError(`--${option}: unknown value '${item}' (choose from ${allowed.join(", ")})`);
  }
  if (items.length === 0) throw new BenchUsageError(`--${option} needs at least one value`);
  return items as T[];
}

function integer(value: string | undefined, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new BenchUsageError(`--${option} must be a whole number from ${min} to ${max}, got '${value}'`);
  return n;
}

export function parseBenchOptions(argv: string[]): BenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        kinds: { type: "string" },
        paths: { type: "string" },
        privilege: { type: "string" },
        vcpus: { type: "string" },
        "scaling-kinds": { type: "string" },
        "no-c": { type: "boolean" },
        "no-qemu": { type: "boolean" },
        qemu: { type: "string" },
        "no-start": { type: "boolean" },
        "no-idle": { type: "boolean" },
        "no-vmexit": { type: "boolean" },
        quick: { type: "boolean" },
        iterations: { type: "string" },
        batches: { type: "string" },
        "ops-per-batch": { type: "string" },
        warmup: { type: "string" },
        calibration: { type: "string" },
        repeats: { type: "string" },
        "start-samples": { type: "string" },
        "spin-min": { type: "string" },
        "spin-max": { type: "string" },
        "spin-yields": { type: "string" },
        "dispatcher-spin-us": { type: "string" },
        ring: { type: "string" },
        json: { type: "string" },
        svg: { type: "string" },
        from: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new BenchUsageError((error as Error).message);
  }
  const quick = values.quick ?? false;
  const preset = quick ? PRESETS.quick : PRESETS.default;
  const vcpuCounts = values.vcpus?.split(",").map((v) => integer(v.trim(), "vcpus", 1, 64)!);
  const plan: PlanOptions = {
    kinds: list<ExitKindName>(values.kinds, ALL_KINDS, "kinds") ?? DEFAULT_PLAN.kinds,
    paths: list<JsPath>(values.paths, ALL_JS_PATHS, "paths") ?? DEFAULT_PLAN.paths,
    privileges: list<GuestPrivilege>(values.privilege, ALL_PRIVILEGES, "privilege") ?? DEFAULT_PLAN.privileges,
    vcpuCounts: vcpuCounts ?? DEFAULT_PLAN.vcpuCounts,
    scalingKinds: list<ExitKindName>(values["scaling-kinds"], ALL_KINDS, "scaling-kinds") ?? DEFAULT_PLAN.scalingKinds,
    scalingPaths: DEFAULT_PLAN.scalingPaths,
    scalingSyncKinds: DEFAULT_PLAN.scalingSyncKinds.filter((k) => values["scaling-kinds"] === undefined || values["scaling-kinds"].split(",").map((s) => s.trim()).includes(k)),
    scalingPrivileges: DEFAULT_PLAN.scalingPrivileges,
  };
  const spin: SpinPolicy = {
    minSpins: integer(values["spin-min"], "spin-min", 0) ?? DEFAULT_SPIN.minSpins,
    maxSpins: integer(values["spin-max"], "spin-max", 0) ?? DEFAULT_SPIN.maxSpins,
    shortParkMicros: DEFAULT_SPIN.shortParkMicros,
    yields: integer(values["spin-yields"], "spin-yields", 0, 1_000_000) ?? DEFAULT_SPIN.yields,
  };
  if (spin.minSpins > spin.maxSpins) throw new BenchUsageError(`--spin-min (${spin.minSpins}) is above --spin-max (${spin.maxSpins})`);
  const ring = integer(values.ring, "ring", 1, 1 << 20) ?? 1024;
  if ((ring & (ring - 1)) !== 0) throw new BenchUsageError(`--ring must be a power of two, got ${ring}`);
  if (values.iterations !== undefined && values.batches !== undefined) {
    throw new BenchUsageError("give --iterations or --batches, not both");
  }
  return {
    plan,
    quick,
    measuredBatches: integer(values.batches, "batches", 1, 10_000_000) ?? preset.measuredBatches,
    iterations: integer(values.iterations, "iterations", 1, 1_000_000_000),
    opsPerBatch: integer(values["ops-per-batch"], "ops-per-batch", 1, 4096),
    warmupBatches: integer(values.warmup, "warmup", 1, 10_000_000) ?? preset.warmupBatches,
    calibrationRounds: integer(values.calibration, "calibration", 1, 10_000_000) ?? preset.calibrationRounds,
    repeats: integer(values.repeats, "repeats", 1, 100) ?? preset.repeats,
    startSamples: integer(values["start-samples"], "start-samples", 1, 10_000) ?? preset.startSamples,
    c: !(values["no-c"] ?? false),
    qemu: !(values["no-qemu"] ?? false),
    qemuBinary: values.qemu,
    start: !(values["no-start"] ?? false),
    idle: !(values["no-idle"] ?? false),
    vmexit: !(values["no-vmexit"] ?? false),
    spin,
    dispatcher: {
      ...DEFAULT_DISPATCHER_OPTIONS,
      spinMicros: integer(values["dispatcher-spin-us"], "dispatcher-spin-us", 0) ?? DEFAULT_DISPATCHER_OPTIONS.spinMicros,
    },
    ringCapacity: ring,
    json: values.json,
    svg: values.svg,
    from: values.from,
    help: values.help ?? false,
    argv,
  };
}

/** Exits between two markers for `kind`: KVM-handled kinds are cheap, so more of them. */
export function opsPerBatchFor(kind: ExitKindName, options: Pick<BenchOptions, "opsPerBatch">): number {
  return options.opsPerBatch ?? (kind === "cpuid" || kind === "ioeventfd" ? 64 : 16);
}
