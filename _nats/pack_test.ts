import assert from "node:assert/strict";
import { NdArray } from "../tensor.ts";
import { PackError, packParts, Unpacker } from "./pack.ts";

/** The parts joined, then cut into chunks of `size` bytes. */
function rechunk(parts: Uint8Array[], size: number): Uint8Array[] {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.byteLength;
  }
  const chunks = [];
  for (let i = 0; i < all.byteLength; i += size) chunks.push(all.subarray(i, i + size));
  return chunks;
}

const tensors = {
  w: new NdArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]),
  b: new Float64Array([0.5, -0.25]),
  empty: new Float32Array(0),
};

Deno.test("Unpacker.push() reads a pack in chunks of any size into the tensors it names", () => {
  const { parts, size } = packParts({ kind: "model", round: 3 }, tensors);
  assert.equal(parts.length, 3); // the header, then one view per tensor (none for the empty one)
  assert.equal(parts[1].buffer, tensors.w.data.buffer); // a view, not a copy
  for (const chunk of [1, 3, 7, 64, size]) {
    const unpacker = new Unpacker(1 << 20);
    for (const part of rechunk(parts, chunk)) unpacker.push(part);
    const { meta, tensors: out } = unpacker.finish();
    assert.deepStrictEqual(meta, { kind: "model", round: 3 });
    assert.deepStrictEqual(Object.keys(out), ["w", "b", "empty"]);
    assert.deepStrictEqual(out.w, tensors.w);
    assert.deepStrictEqual(out.b, tensors.b);
    assert.deepStrictEqual(out.empty, new Float32Array(0));
  }
});

Deno.test("Unpacker.finish() refuses a truncated pack, and push() a longer one or a bad magic", () => {
  const { parts } = packParts({}, tensors);
  const bytes = rechunk(parts, 1 << 20)[0];
  const short = new Unpacker(1 << 20);
  short.push(bytes.subarray(0, bytes.byteLength - 1));
  assert.throws(() => short.finish(), { name: "PackError", message: /truncated/ });
  const long = new Unpacker(1 << 20);
  assert.throws(
    () => long.push(new Uint8Array([...bytes, 0])),
    (error: Error) =>
      error instanceof PackError && error instanceof TypeError && /longer/.test(error.message),
  );
  const other = new Unpacker(1 << 20);
  assert.throws(() => other.push(new Uint8Array(16)), /wrong magic/);
});

Deno.test("Unpacker.push() refuses a header announcing more than maxBytes before allocating", () => {
  const { parts } = packParts({}, { big: new Float64Array(1000) });
  const unpacker = new Unpacker(7999);
  assert.throws(() => unpacker.push(parts[0]), {
    name: "RangeError",
    message: `Pack is too large: its tensors are "8000" bytes, at most 7999`,
  });
});

Deno.test("packParts() cuts a tensor into views of at most 16 MiB", () => {
  const big = new Float32Array(5 * 1024 * 1024); // 20 MiB
  const { parts, size } = packParts({}, { big });
  assert.deepStrictEqual(parts.slice(1).map((p) => p.byteLength), [
    16 * 1024 * 1024,
    4 * 1024 * 1024,
  ]);
  assert.equal(size, parts[0].byteLength + big.byteLength);
  assert.throws(() => packParts({}, { x: new Int32Array(2) as never }), TypeError);
});
