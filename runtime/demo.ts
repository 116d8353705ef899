/** The built-in demo: a tiny guest that prints a greeting on COM1 and exits. */
import { Vm, type VmResult } from "./vm.js";
import { Serial16550 } from "./devices/serial-16550.js";
import { ConsoleSink } from "./devices/console-sink.js";
import { helloProgram } from "./guests/programs.js";

export async function runDemo(output: NodeJS.WritableStream = process.stdout): Promise<VmResult> {
  const vm = Vm.create({ memory: 2 * 1024 * 1024 });
  const sink = new ConsoleSink(output);
  vm.addDevice({ space: "pio", base: 0x3f8, length: 8, device: new Serial16550({ output: sink.push }) });
  vm.addDebugExit();
  vm.loadProgram({ code: helloProgram() });
  try {
    return await vm.run();
  } finally {
    sink.flush();
  }
}
