/**
 * Where a host file has holes, as the filesystem reports them through lseek(2) SEEK_HOLE
 * and SEEK_DATA: what a test of DISCARD checks in the image afterwards.
 */
import { closeSync, fstatSync, openSync } from "node:fs";
import koffi from "koffi";

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const lseek = koffi.load("libc.so.6").func("int64_t lseek(int fd, int64_t offset, int whence)");

/** The indices of the `blockBytes` blocks of the file that lie wholly inside a hole. */
export function holeBlocks(path: string, blockBytes = 4096): number[] {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const blocks: number[] = [];
    for (let offset = 0; offset < size;) {
      const hole = Number(lseek(fd, offset, SEEK_HOLE));
      if (hole < 0) throw new Error(`lseek(SEEK_HOLE) on ${path} failed: errno ${koffi.errno()}`);
      if (hole >= size) break;
      const next = Number(lseek(fd, hole, SEEK_DATA));
      const end = next < 0 ? size : next; // ENXIO: a hole up to the end
      for (let b = Math.ceil(hole / blockBytes); (b + 1) * blockBytes <= end; b++) blocks.push(b);
      offset = end;
    }
    return blocks;
  } finally {
    closeSync(fd);
  }
}
