#!/usr/bin/env node
/** `workervisor demo | run | bench | kvm-unit-tests`: the command-line front end. */
import { runDemo } from "./demo.js";

const USAGE = `usage: workervisor <command> [options]

commands:
  demo                 boot the built-in demo guest (prints a greeting on COM1)
  run --kernel FILE    boot a multiboot kernel (see 'workervisor run --help')
  bench                run the exit-latency benchmark suite (see 'workervisor bench --help')
  bench virtio         virtio-blk and virtio-rng throughput beside QEMU (see 'workervisor bench virtio --help')
  guest-fetch          fetch Debian's cloud kernel and build the test initramfs into the cache
  kvm-unit-tests DIR   run a kvm-unit-tests build's x86 suite (see 'workervisor kvm-unit-tests --help')
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "demo": {
      const result = await runDemo();
      process.stderr.write(`workervisor: guest ended (${result.reason}${result.status !== undefined ? `, status ${result.status}` : ""})\n`);
      return result.reason === "debug-exit" && result.status === 0 ? 0 : 1;
    }
    case "run": {
      const { runCommand } = await import("./run-command.js");
      return runCommand(rest);
    }
    case "bench": {
      const { benchCommand } = await import("../bench/bench-command.js");
      return benchCommand(rest);
    }
    case "guest-fetch": {
      const { guestFetchCommand } = await import("./assets/guest-assets.js");
      return guestFetchCommand();
    }
    case "kvm-unit-tests": {
      const { kvmUnitTestsCommand } = await import("./kvm-unit-tests/kvm-unit-tests-command.js");
      return kvmUnitTestsCommand(rest);
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`workervisor: unknown command '${command}'\n${USAGE}`);
      return 2;
  }
}

// Idle vCPU threads are unref'd, so Node exits once the command is done.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`workervisor: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
