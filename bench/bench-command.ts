/** `workervisor bench`: placeholder until the benchmark suite lands. */
export async function benchCommand(_args: string[]): Promise<number> {
  process.stderr.write("workervisor bench: not implemented yet\n");
  return 2;
}
