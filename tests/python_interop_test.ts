/**
 * Interoperability with Python: the `fedcomm` package in `python/` against
 * a fedcomm server (alone, and in a cohort with Deno clients), and
 * `msgpack_numpy` itself against our codec.
 *
 * Needs `/usr/bin/python3` with `msgpack`, `numpy` and `msgpack_numpy`;
 * without them every test here is skipped.
 */

import assert from "node:assert/strict";
import { connect, listen, NdArray, ProtocolError } from "../mod.ts";
import { decode, encode } from "../codec.ts";
import { FaultProxy } from "../bench/_fault_proxy.ts";
import { until } from "./test_util.ts";

const PYTHON = "/usr/bin/python3";
const PYTHON_DIR = decodeURIComponent(new URL("../python/", import.meta.url).pathname);

/** Whether the Python side can run: checked once, at load time. */
function pythonReady(): boolean {
  try {
    const { success } = new Deno.Command(PYTHON, {
      args: ["-c", "import msgpack, numpy, msgpack_numpy"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return success;
  } catch {
    return false; // no such interpreter, or no --allow-run
  }
}

const ignore = !pythonReady();

/** Runs a Python script to completion, feeding `input` on stdin; fails with its stderr. */
async function runPython(script: string, args: string[], input?: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command(PYTHON, {
    args: ["-c", script, PYTHON_DIR, ...args],
    env: { PYTHONDONTWRITEBYTECODE: "1" }, // no __pycache__ in python/
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(input);
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, `python exited with ${code}:\n${new TextDecoder().decode(stderr)}`);
  return stdout;
}

/** Concatenates bodies as frames: 4-byte big-endian length, then the body. */
function frames(bodies: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(bodies.reduce((n, b) => n + 4 + b.byteLength, 0));
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const body of bodies) {
    view.setUint32(offset, body.byteLength);
    out.set(body, offset + 4);
    offset += 4 + body.byteLength;
  }
  return out;
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

const CLIENT_SCRIPT = `
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import fedcomm

with fedcomm.connect("127.0.0.1", int(sys.argv[2]), timeout=10) as client:
    assert (client.id, client.clients, client.server_max_frame_bytes) == (0, 1, 536870912)
    message = client.recv(timeout=10)
    weights = message["weights"]
    assert weights.dtype == np.float32 and weights.shape == (4,), weights
    matrix = client.recv(timeout=10)
    assert matrix.dtype == np.int32 and matrix.shape == (2, 3), matrix
    client.send({
        "round": message["round"],
        "weights": weights * 2,
        "matrix": matrix.astype(np.float64) / 2,
        "transposed": matrix.T,
        "scalar": np.float32(1.5),
        "count": np.int64(7),
        "big": 2**60,
        "bytes": b"\\x01\\x02",
        "nested": [np.arange(3, dtype=np.int64), np.zeros(0, np.float32)],
        "flags": np.array([True, False]),
        "half": np.array([1.5, -2], np.float16),
    })
    # Larger than the 256 KiB read buffer and the 64 KiB copy threshold.
    big = client.recv(timeout=10)["big"]
    assert big.dtype == np.float32 and big.shape == (1 << 18,)
    client.send({"sum": float(big.sum(dtype=np.float64)),
                 "grid": np.arange(300_000, dtype=np.float64).reshape(1000, 300)})
    assert client.recv(timeout=10) == {"done": True}
    print("python ok")
`;

Deno.test({
  name: "python client: handshake, broadcast, NdArray and numpy replies",
  ignore,
  async fn() {
    await using server = listen({ clients: 1 });
    const child = new Deno.Command(PYTHON, {
      args: ["-c", CLIENT_SCRIPT, PYTHON_DIR, String(server.port)],
      env: { PYTHONDONTWRITEBYTECODE: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    let passed = false;
    try {
      await server.ready({ timeout: 15_000 });
      await server.broadcast({ round: 3, weights: new Float32Array([0.5, 1, -2, 3.25]) });
      await server.broadcast(new NdArray(new Int32Array([1, 2, 3, 4, 5, 6]), [2, 3]));

      const reply = (await server.gather({ timeout: 15_000 })).get(0) as Record<
        string,
        unknown
      >;
      assert.equal(reply.round, 3);
      assert.deepEqual(reply.weights, new Float32Array([1, 2, -4, 6.5]));
      assert.deepEqual(
        reply.matrix,
        new NdArray(new Float64Array([0.5, 1, 1.5, 2, 2.5, 3]), [2, 3]),
      );
      assert.deepEqual(reply.transposed, new NdArray(new Int32Array([1, 4, 2, 5, 3, 6]), [3, 2]));
      assert.equal(reply.scalar, 1.5);
      assert.equal(reply.count, 7);
      assert.equal(reply.big, 2n ** 60n);
      assert.deepEqual(reply.bytes, new Uint8Array([1, 2]));
      assert.deepEqual(reply.nested, [new BigInt64Array([0n, 1n, 2n]), new Float32Array(0)]);
      assert.deepEqual(reply.flags, new Uint8Array([1, 0]));
      assert.deepEqual(reply.half, new Float16Array([1.5, -2]));

      const big = new Float32Array(1 << 18).map((_, i) => i % 1000);
      await server.broadcast({ big });
      const second = (await server.gather({ timeout: 15_000 })).get(0) as {
        sum: number;
        grid: NdArray<Float64Array>;
      };
      assert.equal(second.sum, big.reduce((s, x) => s + x, 0));
      assert.deepEqual(second.grid.shape, [1000, 300]);
      assert.ok(second.grid.data instanceof Float64Array);
      assert.equal(second.grid.data.length, 300_000);
      assert.ok(second.grid.data.every((x, i) => x === i));

      await server.broadcast({ done: true });
      passed = true;
    } finally {
      if (!passed) {
        // Do not leave the process running (or its pipes open) after a failure.
        try {
          child.kill();
        } catch {
          // It has already exited.
        }
        const { stderr } = await output;
        console.error(`python stderr:\n${new TextDecoder().decode(stderr)}`);
      }
    }
    const { code, stdout, stderr } = await output;
    assert.equal(code, 0, `python exited with ${code}:\n${new TextDecoder().decode(stderr)}`);
    assert.equal(new TextDecoder().decode(stdout).trim(), "python ok");
  },
});

Deno.test({
  name: "python client: a full server rejects it with reason full",
  ignore,
  async fn() {
    await using server = listen({ clients: 1 });
    await using first = await connect({ port: server.port });
    assert.equal(first.id, 0);
    const stdout = await runPython(
      `
import sys
sys.path.insert(0, sys.argv[1])
import fedcomm
try:
    fedcomm.connect("127.0.0.1", int(sys.argv[2]), timeout=10)
except fedcomm.RejectedError as error:
    print(error.reason)
`,
      [String(server.port)],
    );
    assert.equal(new TextDecoder().decode(stdout).trim(), "full");
  },
});

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

const COHORT_SCRIPT = `
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import fedcomm

with fedcomm.connect("127.0.0.1", int(sys.argv[2]), timeout=10, wait_for_server=True,
                     name="python-site", secret=sys.argv[3],
                     props={"lang": "python", "cores": 2}) as client:
    message = client.recv(timeout=30)
    weights = message["weights"]
    assert weights.dtype == np.float32
    # The same "training" as the Deno clients: w * 0.5 + id, in float32.
    update = (weights * np.float32(0.5) + np.float32(client.id)).astype(np.float32)
    client.reply({"round": message["round"], "id": client.id, "weights": update})
    assert client.recv(timeout=30) == {"done": True}
    assert client.resumes >= 1, client.resumes
    print("python ok")
`;

Deno.test({
  name:
    "python client: a round in a mixed cohort with Deno clients, over authentication, resumed after a cut mid-broadcast, bit for bit",
  ignore,
  async fn() {
    const secret = "cohort secret of 32 bytes, test!";
    await using server = listen({ clients: 3, auth: { secret } });
    // The Python client goes through a proxy that cuts its connection in the middle of the model.
    await using proxy = new FaultProxy({ targetPort: server.port, seed: 3 });
    const deno = [
      await connect({ port: server.port, name: "deno-a", secret }),
      await connect({ port: server.port, name: "deno-b", secret }),
    ];
    const resumed = new Promise<number>((resolve) =>
      server.addEventListener("resume", (e) => resolve(e.clientId), { once: true })
    );
    const child = new Deno.Command(PYTHON, {
      args: ["-c", COHORT_SCRIPT, PYTHON_DIR, String(proxy.port), secret],
      env: { PYTHONDONTWRITEBYTECODE: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    try {
      await server.ready({ timeout: 15_000 });
      assert.deepStrictEqual(server.stats().map((s) => s.name), [
        "deno-a",
        "deno-b",
        "python-site",
      ]);
      assert.deepStrictEqual(server.stats(2).props, { lang: "python", cores: 2 });
      // The proxy has forwarded the welcome: a cut from now on is one of the session.
      await until(() => proxy.live()[0]?.handshaking === false, "the welcome to reach Python");
      // Armed before the broadcast, aimed at a body of 1 MiB or more: it lands inside the model
      // whatever small frames go first, and however fast either side is.
      const cut = proxy.cut({
        kind: "body",
        direction: "down",
        connection: 0,
        minBodyBytes: 1024 * 1024,
      });
      // Values whose float32 products are exact or rounded: both sides must round alike.
      const weights = new Float32Array(4_000_000).map((_, i) => Math.fround(Math.sin(i) * 1e3));
      const broadcasting = server.broadcast({ round: 1, weights }, { timeout: 30_000 });
      broadcasting.catch(() => {}); // awaited below, after the answers
      await Promise.all(deno.map(async (client) => {
        const { round, weights: w } = await client.recv({ timeout: 20_000 }) as {
          round: number;
          weights: Float32Array;
        };
        const update = new Float32Array(w.length);
        for (let i = 0; i < w.length; i++) update[i] = Math.fround(w[i] * 0.5) + client.id;
        await client.reply({ round, id: client.id, weights: update });
      }));
      const fault = await cut;
      assert.equal(fault?.kind, "cut-body");
      assert.ok(fault.offset < 16_000_000, `the cut landed inside the model: ${fault.offset}`);
      assert.equal(await resumed, 2);
      const answers = await server.gather({ timeout: 30_000 });
      await broadcasting;
      assert.equal(server.stats(2).resumes, 1);
      assert.equal(answers.size, 3);
      for (const [id, answer] of answers) {
        const { round, weights: got } = answer as { round: number; weights: Float32Array };
        assert.equal(round, 1);
        assert.ok(got instanceof Float32Array);
        const expected = new Float32Array(weights.length);
        for (let i = 0; i < weights.length; i++) {
          expected[i] = Math.fround(Math.fround(weights[i] * 0.5) + id);
        }
        assert.deepStrictEqual(
          new Uint8Array(got.buffer, got.byteOffset, got.byteLength),
          new Uint8Array(expected.buffer),
          `client ${id}: the same float32 bits`,
        );
      }
      await server.broadcast({ done: true });
    } catch (error) {
      // Our failure is the news: Python would only wait for a message that never comes.
      child.kill();
      await output;
      throw error;
    } finally {
      for (const client of deno) await client.close();
    }
    const { code, stdout, stderr } = await output;
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.equal(new TextDecoder().decode(stdout).trim(), "python ok");
  },
});
