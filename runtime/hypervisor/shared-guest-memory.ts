/**
 * Guest RAM for hypervisors that map memory the VMM gives them (KVM, MSHV): SAB-backed
 * regions (memory/guest-memory.ts), each registered with the VM as one slot. A backend
 * that hands memory out itself implements `VmHandle.createGuestMemory` its own way.
 */
import { GuestMemory, type RegionSpec } from "../../memory/guest-memory.js";

export function mapSharedGuestMemory(
  regions: readonly RegionSpec[],
  setMemoryRegion: (slot: number, gpa: number, size: number, hostAddress: bigint) => void,
): GuestMemory {
  const memory = GuestMemory.allocate(regions);
  memory.regions.forEach((region, slot) => setMemoryRegion(slot, region.gpa, region.size, region.hostAddress));
  return memory;
}
