/** `workervisor run`: boots a kernel file. Placeholder until the multiboot platform lands. */
export async function runCommand(_args: string[]): Promise<number> {
  process.stderr.write("workervisor run: not implemented yet\n");
  return 2;
}
