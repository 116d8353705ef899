/** The /dev/mshv backend's entry point: all the registry (../backends.ts) sees of this folder. */
import type { Backend } from "../hypervisor.js";
import { MshvHypervisor } from "./mshv-system.js";
import { MshvVp } from "./mshv-vp.js";

export const mshvBackend: Backend = {
  name: "mshv",
  open: () => MshvHypervisor.open(),
  attachVcpu: (descriptor, context) => new MshvVp(descriptor, context),
};
