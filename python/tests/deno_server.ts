/**
 * A fedcomm coordinator for the Python tests (`test_deno_server.py`): runs the
 * real Deno `listen()` with options from a JSON argument, prints its port as
 * the first JSON line on stdout, then runs FedAvg-like rounds and prints one
 * JSON line per round with what each client answered. Server events are
 * printed as they happen, as lines with an `event` key.
 *
 * Usage: `deno run -A python/tests/deno_server.ts '{"clients": 2, "rounds": 2}'`
 *
 * Config keys: `clients`, `port` (default 0: any free one), `rounds` (default
 * 1; 0: no rounds, just `hold`), `size` (weights per round, default 1000),
 * `timeout` (ms, default 20,000), `secret` (→ `auth.secret`), `secrets` (name →
 * secret: `auth.clients`), `tls` (`{cert, key}`: PEM file paths → `tls.cert`,
 * `tls.key` contents), `hold` (ms to keep the connections open after the
 * rounds, default 0), `heartbeatMs`, `idleTimeout`, `maxFrameBytes`,
 * `maxMessageBytes`, `open`, `resumeTimeout`, `retainBytes` (passed to
 * `listen`), `settled` (`{min, grace}`: gather with `gatherSettled`, and print
 * `failed`, `late`, `quorum`), `double` (send each round's message twice, as
 * `{round, weights, copy: 1|2}`, before gathering: a client that answers both
 * makes a late reply), `ramp` (the weights of round r are `(i % 1000) + r`
 * instead of all r, and each answer says whether its weights are exactly
 * `2 * sent + id`: `exact`; with `maxFrameBytes` smaller than the weights,
 * the broadcasts and the answers are long messages, PROTOCOL.md §8.8), `tag`
 * (a small field sent with the weights, `tag`, checked in the answers).
 *
 * Round lines: `{round, answers: [{id, round, name, type, length, sum, exact?, tag?}],
 * failed?: {id: error}, late?: {id: count}, quorum?}`. Event lines: `{event:
 * "join" | "disconnect" | "resume" | "leave", id, name, props, error?}` and
 * `{event: "late", id, replyTo, latest, round}`, `{event: "refuse", reason, message, name?}`. Last line: `{done: true}` or
 * `{error}`.
 *
 * @module
 */

import { type ClientEvent, type LateReplyEvent, listen, type RefuseEvent } from "../../mod.ts";

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
  maxMessageBytes?: number;
  open?: boolean;
  resumeTimeout?: number;
  retainBytes?: number;
  settled?: { min?: number; grace?: number };
  double?: boolean;
  ramp?: boolean;
  tag?: string;
}

interface Answer {
  round: number;
  weights: Float32Array;
  name?: string;
  tag?: string;
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
  maxMessageBytes: config.maxMessageBytes,
  open: config.open,
  resumeTimeout: config.resumeTimeout,
  retainBytes: config.retainBytes,
};
if (config.secret !== undefined) options.auth = { secret: config.secret };
if (config.secrets !== undefined) options.auth = { clients: config.secrets };
if (config.tls !== undefined) {
  options.tls = {
    cert: await Deno.readTextFile(config.tls.cert),
    key: await Deno.readTextFile(config.tls.key),
  };
}

function print(line: unknown): void {
  console.log(JSON.stringify(line));
}

/** The weights of a round: all `round`, or with `ramp` `(i % 1000) + round`. */
function roundWeights(size: number, round: number): Float32Array {
  const weights = new Float32Array(size);
  for (let i = 0; i < size; i++) weights[i] = config.ramp ? (i % 1000) + round : round;
  return weights;
}

function summary(id: number, value: unknown) {
  const { round, weights, name, tag } = value as Answer;
  let sum = 0;
  for (const w of weights) sum += w;
  const line = { id, round, name, type: weights.constructor.name, length: weights.length, sum };
  if (!config.ramp) return line;
  let exact = true;
  for (let i = 0; i < weights.length && exact; i++) {
    exact = weights[i] === 2 * ((i % 1000) + round) + id;
  }
  return { ...line, exact, tag };
}

const server = listen(options);
for (const type of ["join", "disconnect", "resume", "leave"] as const) {
  server.addEventListener(type, (event: ClientEvent) => {
    print({
      event: type,
      id: event.clientId,
      name: event.name,
      props: event.props,
      error: event.error === undefined ? undefined : String(event.error),
    });
  });
}
server.addEventListener("late", (event: LateReplyEvent) => {
  const { round } = event.value as Answer;
  print({ event: "late", id: event.clientId, replyTo: event.replyTo, latest: event.latest, round });
});
server.addEventListener("refuse", (event: RefuseEvent) => {
  print({ event: "refuse", reason: event.reason, message: event.message, name: event.name });
});
print({ port: server.port });
try {
  await server.ready({ timeout });
  const size = config.size ?? 1000;
  for (let round = 1; round <= (config.rounds ?? 1); round++) {
    const weights = roundWeights(size, round);
    if (config.tag !== undefined) {
      await server.broadcast({ round, weights, tag: config.tag });
    } else if (config.double) {
      await server.broadcast({ round, weights, copy: 1 });
      await server.broadcast({ round, weights, copy: 2 });
    } else {
      await server.broadcast({ round, weights });
    }
    if (config.settled !== undefined || config.double) {
      const result = await server.gatherSettled({ ...config.settled, timeout });
      print({
        round,
        answers: [...result.received].map(([id, value]) => summary(id, value)),
        failed: Object.fromEntries([...result.failed].map(([id, error]) => [id, String(error)])),
        late: Object.fromEntries(result.late),
        quorum: result.quorum,
      });
    } else {
      const answers = await server.gather({ timeout });
      print({ round, answers: [...answers].map(([id, value]) => summary(id, value)) });
    }
  }
  if (config.hold) await new Promise((resolve) => setTimeout(resolve, config.hold));
  print({ done: true });
} catch (error) {
  print({ error: String(error) });
} finally {
  await server.close();
}
