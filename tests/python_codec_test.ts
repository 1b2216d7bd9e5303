/**
 * Interoperability with Python: `msgpack_numpy` and Python's `msgpack`
 * against our codec, each way.
 *
 * Needs `/usr/bin/python3` with `msgpack`, `numpy` and `msgpack_numpy`;
 * without them every test here is skipped.
 */

import assert from "node:assert/strict";
import { NdArray, ProtocolError } from "../mod.ts";
import { decode, encode } from "../codec.ts";
import { frame } from "./fake_conn.ts";
import { concat, pythonReady, runPython } from "./test_util.ts";

const ignore = !pythonReady("msgpack", "numpy", "msgpack_numpy");

/** Concatenates bodies as frames: 4-byte big-endian length, then the body. */
function frames(bodies: Uint8Array[]): Uint8Array {
  return concat(bodies.map(frame));
}

/** Splits a byte string of frames into their bodies. */
function unframe(bytes: Uint8Array): Uint8Array[] {
  const bodies: Uint8Array[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (offset < bytes.byteLength) {
    const length = view.getUint32(offset);
    bodies.push(bytes.slice(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  return bodies;
}

Deno.test({
  name: "msgpack_numpy decodes bodies from our encode",
  ignore,
  async fn() {
    const arrays: [string, unknown][] = [
      ["<f4", new Float32Array([1.5, -2, 3])],
      ["<f8", new Float64Array([0.25, 1e300])],
      ["<f2", new Float16Array([0.5, 65504])],
      ["|i1", new Int8Array([-128, 127])],
      ["<i2", new Int16Array([-32768, 1])],
      ["<u2", new Uint16Array([65535, 2])],
      ["<i4", new Int32Array([-1, 2 ** 31 - 1])],
      ["<u4", new Uint32Array([2 ** 32 - 1, 0])],
      ["<i8", new BigInt64Array([-(2n ** 63n), 5n])],
      ["<u8", new BigUint64Array([2n ** 64n - 1n])],
      ["<f4", new NdArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3])],
      ["<i4", new NdArray(new Int32Array([7]), [])],
      ["|u1", new NdArray(new Uint8Array([1, 2, 3, 4]), [2, 1, 2])],
    ];
    // Keys of 0 to 7 characters put the tensor data at every alignment padding.
    const bodies = arrays.flatMap(([, value]) =>
      [0, 1, 2, 3, 4, 5, 6, 7].map((n) => encode({ ["k".repeat(n)]: 0, value }))
    );
    const stdout = await runPython(
      `
import sys, json
import msgpack, msgpack_numpy
data = sys.stdin.buffer.read()
out, p = [], 0
while p < len(data):
    n = int.from_bytes(data[p:p + 4], "big")
    value = msgpack.unpackb(data[p + 4:p + 4 + n], object_hook=msgpack_numpy.decode, raw=False)["value"]
    out.append({"dtype": value.dtype.str, "shape": list(value.shape),
                "values": [str(x) for x in value.ravel().tolist()]})
    p += 4 + n
print(json.dumps(out))
`,
      [],
      frames(bodies),
    );
    const results: { dtype: string; shape: number[]; values: string[] }[] = JSON.parse(
      new TextDecoder().decode(stdout),
    );
    assert.equal(results.length, bodies.length);
    results.forEach((result, i) => {
      const [dtype, value] = arrays[Math.floor(i / 8)];
      const data = (value instanceof NdArray ? value.data : value) as ArrayLike<number | bigint>;
      const shape = value instanceof NdArray ? value.shape : [data.length];
      const parse = (x: string | number | bigint) => dtype[1] === "f" ? Number(x) : BigInt(x);
      assert.equal(result.dtype, dtype, `body ${i}`);
      assert.deepEqual(result.shape, shape, `body ${i}`);
      assert.deepEqual(
        result.values.map((x) => parse(x)),
        Array.from(data, (x) => parse(x)),
        `body ${i}`,
      );
    });
  },
});

Deno.test({
  name: "our decode reads bodies from msgpack.packb with msgpack_numpy.encode",
  ignore,
  async fn() {
    const stdout = await runPython(
      `
import sys
import msgpack, msgpack_numpy
import numpy as np
values = [
    np.array([1.5, -2, 3], np.float32),
    np.arange(6, dtype=np.float64).reshape(2, 3),
    np.array([-(2**63), 2**53 + 1], np.int64),
    np.array([1, 2, 255], np.uint8),
    np.array([True, False, True]),
    np.array([0.5, -1], np.float16),
    np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    np.float32(2.5),
    np.int64(-3),
    {"w": np.array([1, 2], np.uint32), "round": 4},
    np.array([1, 2], ">f4"),
]
for value in values:
    body = msgpack.packb(value, default=msgpack_numpy.encode)
    sys.stdout.buffer.write(len(body).to_bytes(4, "big") + body)
`,
      [],
    );
    const bodies = unframe(stdout);
    assert.equal(bodies.length, 11);
    const expected: unknown[] = [
      new Float32Array([1.5, -2, 3]),
      new NdArray(new Float64Array([0, 1, 2, 3, 4, 5]), [2, 3]),
      new BigInt64Array([-(2n ** 63n), 2n ** 53n + 1n]),
      new Uint8Array([1, 2, 255]),
      new Uint8Array([1, 0, 1]),
      new Float16Array([0.5, -1]),
      new NdArray(new Int16Array([0, 1, 2, 3, 4, 5]), [2, 3]),
      2.5,
      -3,
      { w: new Uint32Array([1, 2]), round: 4 },
    ];
    expected.forEach((value, i) => assert.deepEqual(decode(bodies[i]), value, `value ${i}`));
    // Big-endian data is refused, not misread.
    assert.throws(() => decode(bodies[10]), ProtocolError);
  },
});

Deno.test({
  name: "Python msgpack decodes our ordinary values exactly as @msgpack/msgpack's bytes",
  ignore,
  async fn() {
    const { encode: reference } = await import("@msgpack/msgpack");
    const values: unknown[] = [
      null,
      true,
      false,
      0,
      127,
      128,
      -32,
      -33,
      65535,
      65536,
      2 ** 32,
      2 ** 53 - 1,
      -(2 ** 31) - 1,
      0.1,
      -1.5e300,
      "",
      "fedcomm",
      "é".repeat(100),
      "x".repeat(70_000),
      [1, [2, [3, []]]],
      { round: 3, loss: 0.25, tag: "train", ok: true, none: null },
      Array.from({ length: 20 }, (_, i) => i * 1.5),
      Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
      new Uint8Array([0, 1, 255]),
    ];
    const ours = values.map((value) => encode(value));
    const theirs = values.map((value) => reference(value));
    ours.forEach((bytes, i) => assert.deepStrictEqual(bytes, theirs[i], `value ${i}`));
    // Python decodes each of our bodies, and the JSON of what it got must be the JavaScript value.
    const stdout = await runPython(
      `
import sys, json, base64
import msgpack
data = sys.stdin.buffer.read()
out, p = [], 0
while p < len(data):
    n = int.from_bytes(data[p:p + 4], "big")
    value = msgpack.unpackb(data[p + 4:p + 4 + n], raw=False)
    out.append({"b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value)
    p += 4 + n
print(json.dumps(out))
`,
      [],
      frames(ours),
    );
    const decoded = JSON.parse(new TextDecoder().decode(stdout));
    assert.equal(decoded.length, values.length);
    decoded.forEach((got: unknown, i: number) => {
      const value = values[i];
      if (value instanceof Uint8Array) {
        assert.deepStrictEqual(got, { b64: btoa(String.fromCharCode(...value)) }, `value ${i}`);
      } else {
        assert.deepStrictEqual(got, JSON.parse(JSON.stringify(value)), `value ${i}`);
      }
    });
  },
});
