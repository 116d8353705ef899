/** The LZ4 legacy-frame decoder: matches (overlapping or not), framing and corrupt input. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decompressLz4Legacy, Lz4FormatError } from "../runtime/boot/linux/lz4-legacy.js";

const MAGIC = [0x02, 0x21, 0x4c, 0x18];
const frame = (...blocks: number[][]) =>
  Uint8Array.from([...MAGIC, ...blocks.flatMap((b) => [b.length & 0xff, (b.length >> 8) & 0xff, 0, 0, ...b])]);
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

test("lz4 legacy: literals, an overlapping run, a distant copy and a long match length", () => {
  const block = [
    0x34, 0x61, 0x62, 0x63, 0x01, 0x00, //  "abc", then 8 bytes from 1 back: "cccccccc"
    0x0f, 0x0b, 0x00, 0x03, //              no literals, 4+15+3 = 22 bytes from 11 back
    0x50, 0x76, 0x77, 0x78, 0x79, 0x7a, //  last sequence: "vwxyz"
  ];
  const out = decompressLz4Legacy(frame(block), 3 + 8 + 22 + 5);
  const head = "abccccccccc";
  assert.equal(text(out), head + (head + head).slice(0, 22) + "vwxyz");
});

test("lz4 legacy: blocks across frames, and bad input refused", () => {
  const one = [0x30, 0x61, 0x62, 0x63];
  const two = [0x20, 0x64, 0x65];
  const joined = Uint8Array.from([...frame(one), ...MAGIC, ...frame(two).subarray(4)]);
  assert.equal(text(decompressLz4Legacy(joined, 5)), "abcde");
  assert.throws(() => decompressLz4Legacy(Uint8Array.from([1, 2, 3, 4]), 1), /no legacy-frame magic/);
  assert.throws(() => decompressLz4Legacy(frame(one).subarray(0, 9), 3), /runs past the end .*truncated/);
  assert.throws(() => decompressLz4Legacy(frame(one), 10), /ends after 3 of 10 .*truncated/);
  assert.throws(() => decompressLz4Legacy(frame([0x14, 0x61, 0x05, 0x00]), 9), Lz4FormatError, "offset before the output");
});
