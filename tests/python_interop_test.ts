/**
 * Interoperability with Python: the `fedcomm` package in `python/` as a
 * client of a fedcomm server, alone and in a cohort with Deno clients. Our
 * codec against Python's `msgpack` and `msgpack_numpy` is in
 * `python_codec_test.ts`.
 *
 * Needs `/usr/bin/python3` with `msgpack`, `numpy` and `msgpack_numpy`;
 * without them every test here is skipped.
 */

import assert from "node:assert/strict";
import { connect, listen, NdArray } from "../mod.ts";
import { FaultProxy } from "../bench/_fault_proxy.ts";
import { pythonReady, runPython, spawnPython, until } from "./test_util.ts";

const ignore = !pythonReady("msgpack", "numpy", "msgpack_numpy");

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
    const child = spawnPython(CLIENT_SCRIPT, [String(server.port)]);
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
    const child = spawnPython(COHORT_SCRIPT, [String(proxy.port), secret]);
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
