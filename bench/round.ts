/**
 * The round benchmark, fedcomm side. Each round the server broadcasts
 * `{ round, weights: Float32Array(SIZE / 4) }`; every client replies (`client.reply`)
 * `{ id, round, weights }` with the weights it received; the server gathers
 * all N and checks round and length.
 *
 * ```sh
 * deno run -A bench/round.ts server PORT N SIZE ROUNDS   # prints one JSON line
 * deno run -A bench/round.ts client PORT N               # one process, N connections
 * ```
 *
 * With `FEDCOMM_TLS=1` in the environment both sides use TLS, with the
 * test-only certificates in `testdata/tls/` (the `fedcomm+tls` column).
 *
 * @module
 */

import { connect, listen } from "../mod.ts";
import { median, parseArgs, report } from "./common.ts";

const { role, port, clients, size, rounds } = parseArgs(Deno.args);
const tlsDir = new URL("../testdata/tls/", import.meta.url);
const tls = Deno.env.get("FEDCOMM_TLS") === "1";
const recycle = Deno.env.get("FEDCOMM_RECYCLE") === "1";
const read = (name: string) => Deno.readTextFileSync(new URL(name, tlsDir));
// Untimed warm-up rounds, the same for every implementation, so the JIT has
// compiled the hot paths: as many as the timed rounds for small payloads.
const WARMUP = size >= 1 << 20 ? 2 : rounds;

if (role === "server") {
  await using server = listen({
    port,
    clients,
    receiveBufferBytes: Number(Deno.env.get("RBB") ?? 134217728),
    tls: tls ? { cert: read("server.pem"), key: read("server.key") } : undefined,
  });
  await server.ready({ timeout: 120_000 });
  const weights = new Float32Array(size / 4).fill(0.5);
  const times: number[] = [];
  for (let round = -WARMUP; round < rounds; round++) {
    const start = performance.now();
    await server.broadcast({ round, weights });
    const replies = await server.gather({ timeout: 120_000 });
    for (const [id, reply] of replies) {
      const r = reply as { id: number; round: number; weights: Float32Array };
      if (r.round !== round || r.id !== id || r.weights.length !== weights.length) {
        throw new Error(`Bad reply from client "${id}" in round ${round}`);
      }
      if (recycle) server.recycle(reply);
    }
    if (round >= 0) times.push((performance.now() - start) / 1000);
  }
  report(
    tls ? "fedcomm+tls" : recycle ? "fedcomm+recycle" : "fedcomm",
    clients,
    size,
    rounds,
    median(times),
  );
} else {
  const all = [];
  for (let i = 0; i < clients; i++) {
    all.push(
      await connect({
        port,
        timeout: 120_000,
        waitForServer: true,
        tls: tls ? { caCerts: [read("ca.pem")], hostname: "localhost" } : undefined,
      }),
    );
  }
  await Promise.all(all.map(async (client) => {
    for await (const message of client) {
      const { round, weights } = message as { round: number; weights: Float32Array };
      await client.reply({ id: client.id, round, weights });
      if (recycle) client.recycle(message);
    }
    await client.close();
  }));
}
