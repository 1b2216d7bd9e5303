/**
 * A fedcomm coordinator for the Python tests (`test_deno_server.py`): runs the
 * real Deno `listen()` with options from a JSON argument, prints its port as
 * the first JSON line on stdout, then runs FedAvg-like rounds and prints one
 * JSON line per round with what each client answered.
 *
 * Usage: `deno run -A python/tests/deno_server.ts '{"clients": 2, "rounds": 2}'`
 *
 * Config keys: `clients`, `port` (default 0: any free one), `rounds` (default 1), `size` (weights per round,
 * default 1000), `timeout` (ms, default 20,000), `secret` (→ `auth.secret`),
 * `secrets` (name → secret: `auth.clients`), `tls` (`{cert, key}`: PEM file
 * paths → `tls.cert`, `tls.key` contents),
 * `hold` (ms to keep the connections open after the rounds, default 0),
 * `heartbeatMs`, `idleTimeout`, `maxFrameBytes` (passed to `listen`).
 *
 * @module
 */

import { listen } from "../../mod.ts";

interface Config {
  clients: number;
  port?: number;
  rounds?: number;
  size?: number;
  timeout?: number;
  secret?: string;
  secrets?: Record<string, string>;
  tls?: { cert: string; key: string };
  hold?: number;
  heartbeatMs?: number;
  idleTimeout?: number;
  maxFrameBytes?: number;
}

const config: Config = JSON.parse(Deno.args[0] ?? '{"clients": 1}');
const timeout = config.timeout ?? 20_000;
const options: Parameters<typeof listen>[0] = {
  hostname: "127.0.0.1",
  port: config.port ?? 0,
  clients: config.clients,
  heartbeatMs: config.heartbeatMs,
  idleTimeout: config.idleTimeout,
  maxFrameBytes: config.maxFrameBytes,
};
if (config.secret !== undefined) options.auth = { secret: config.secret };
if (config.secrets !== undefined) options.auth = { clients: config.secrets };
if (config.tls !== undefined) {
  options.tls = {
    cert: await Deno.readTextFile(config.tls.cert),
    key: await Deno.readTextFile(config.tls.key),
  };
}

const server = listen(options);
console.log(JSON.stringify({ port: server.port }));
try {
  await server.ready({ timeout });
  const size = config.size ?? 1000;
  for (let round = 1; round <= (config.rounds ?? 1); round++) {
    await server.broadcast({ round, weights: new Float32Array(size).fill(round) });
    const answers = await server.gather({ timeout });
    const summary = [...answers].map(([id, value]) => {
      const { round: answered, weights, name } = value as {
        round: number;
        weights: Float32Array;
        name?: string;
      };
      let sum = 0;
      for (const w of weights) sum += w;
      return {
        id,
        round: answered,
        name,
        type: weights.constructor.name,
        length: weights.length,
        sum,
      };
    });
    console.log(JSON.stringify({ round, answers: summary }));
  }
  if (config.hold) await new Promise((resolve) => setTimeout(resolve, config.hold));
  console.log(JSON.stringify({ done: true }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error) }));
} finally {
  await server.close();
}
