/**
 * One site of the fault-injection soak (`bench/soak.ts` starts several of
 * these as processes, through its fault proxy):
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 bench/soak_client.ts --port 7000 --name site-0
 * ```
 *
 * It connects with its name (retrying while the first connection fails,
 * since the proxy may cut a handshake), then for every message `{ round,
 * attempt, weights }`: it checks the weights (a function of the round),
 * computes its update (a function of the round and its name only, see
 * {@linkcode updateFor}) and replies with `client.reply()`, adding what it
 * counted so the server can tell lost and duplicated messages apart:
 * {@linkcode SoakReply}. `{ stop: true }` ends it: `client.close()` and exit
 * 0. A session that cannot be resumed ends it with exit code 3.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Client, connect } from "../client.ts";

/** A round's request from the soak server. */
export interface SoakRequest {
  /** The round, from 0. */
  readonly round: number;
  /** 1 for the round's broadcast, then 2, 3, … for each time this site is asked again. */
  readonly attempt: number;
  /** The model: {@linkcode modelFor}`(round, length)`. */
  readonly weights: Float32Array;
}

/** The message that ends a site. */
export interface SoakStop {
  /** Always true. */
  readonly stop: true;
}

/** A site's reply to a {@linkcode SoakRequest}. */
export interface SoakReply {
  /** The request's round. */
  readonly round: number;
  /** The site's name. */
  readonly site: string;
  /** The request's attempt. */
  readonly attempt: number;
  /** Messages this process took from its session, this one included. */
  readonly taken: number;
  /** `client.lastReceived` when replying (should equal `taken`). */
  readonly lastReceived: number;
  /** This process's id (a restarted site is a new process, with a new session). */
  readonly pid: number;
  /** Requests this process took more than once (same round and attempt): duplicates. */
  readonly repeats: number;
  /** Requests of an earlier round than one taken before. */
  readonly outOfOrder: number;
  /** Whether the weights were {@linkcode modelFor}`(round, length)` exactly. */
  readonly weightsOk: boolean;
  /** {@linkcode updateFor}`(round, site, weights.length)`. */
  readonly update: Float32Array;
}

/**
 * The model the server sends in a round: values k/1024, exact in float32.
 *
 * @param round The round.
 * @param length How many weights.
 * @returns The weights.
 */
export function modelFor(round: number, length: number): Float32Array {
  const weights = new Float32Array(length);
  for (let i = 0; i < length; i++) weights[i] = ((round * 131 + i * 7) % 1024) / 1024;
  return weights;
}

/** FNV-1a of a string's UTF-16 code units. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * A site's update in a round: a function of the round and the site's name
 * only. Values are multiples of 1/256 in [−4, 4), so sums over thousands of
 * sites are exact in float32.
 *
 * @param round The round.
 * @param site The site's name.
 * @param length How many values.
 * @returns The update.
 */
export function updateFor(round: number, site: string, length: number): Float32Array {
  const base = (hash(site) % 2048) + round * 7919;
  const update = new Float32Array(length);
  for (let i = 0; i < length; i++) update[i] = (((base + i * 13) % 2048) - 1024) / 256;
  return update;
}

function sameWeights(weights: unknown, round: number): boolean {
  if (!(weights instanceof Float32Array)) return false;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] !== ((round * 131 + i * 7) % 1024) / 1024) return false;
  }
  return true;
}

/** Options of {@linkcode runSite}. */
export interface SiteOptions {
  /** The port of the server (or of the proxy in front of it). */
  port: number;
  /** The site's name. */
  name: string;
  /** The client's `idleTimeout` in ms. */
  idleTimeout: number;
  /** The client's `heartbeatMs`. */
  heartbeatMs: number;
  /** How long to keep trying to connect, in ms. */
  connectFor: number;
  /** Where to report events (disconnects, resumes); default nowhere. */
  log?: (line: string) => void;
}

async function connectRetrying(options: SiteOptions): Promise<Client> {
  const deadline = Date.now() + options.connectFor;
  for (let delay = 50;; delay = Math.min(delay * 2, 1000)) {
    try {
      return await connect({
        port: options.port,
        name: options.name,
        props: { pid: Deno.pid },
        idleTimeout: options.idleTimeout,
        heartbeatMs: options.heartbeatMs,
        waitForServer: true,
        timeout: Math.max(1000, deadline - Date.now()),
      });
    } catch (error) {
      if (Date.now() + delay > deadline) throw error;
      options.log?.(`connect failed (${(error as Error).message}); again in ${delay} ms`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/**
 * Runs one site until the server says stop.
 *
 * @param options Where to connect, the name, the timeouts.
 */
export async function runSite(options: SiteOptions): Promise<void> {
  const { name, log } = options;
  await using client = await connectRetrying(options);
  log?.(`joined as client ${client.id}`);
  client.addEventListener("disconnect", (e) => log?.(`disconnected: ${e.error?.message}`));
  client.addEventListener("resume", () => log?.("resumed"));
  const seen = new Set<string>();
  let taken = 0;
  let repeats = 0;
  let outOfOrder = 0;
  let latestRound = -1;
  let stopped = false;
  for await (const message of client) {
    taken++;
    if ((message as SoakStop).stop === true) {
      stopped = true;
      break;
    }
    const { round, attempt, weights } = message as SoakRequest;
    const key = `${round}/${attempt}`;
    if (seen.has(key)) repeats++;
    seen.add(key);
    if (round < latestRound) outOfOrder++;
    latestRound = Math.max(latestRound, round);
    const reply: SoakReply = {
      round,
      site: name,
      attempt,
      taken,
      lastReceived: client.lastReceived,
      pid: Deno.pid,
      repeats,
      outOfOrder,
      weightsOk: sameWeights(weights, round),
      update: updateFor(round, name, weights.length),
    };
    await client.reply(reply);
  }
  if (!stopped) {
    // The iteration ends quietly when the session is over; recv() says why.
    const why = await client.recv({ timeout: 100 }).then(
      () => "a message after the end",
      (error) => `${error.name}: ${error.message}`,
    );
    throw new Error(
      `The session ended without a stop message after ${taken} messages (${client.state}: ${why})`,
    );
  }
  await client.close();
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      name: { type: "string" },
      "idle-timeout": { type: "string", default: "1000" },
      heartbeat: { type: "string", default: "250" },
      "connect-for": { type: "string", default: "30000" },
      verbose: { type: "boolean", default: false },
    },
  });
  const port = Number(values.port);
  if (!Number.isSafeInteger(port) || values.name === undefined) {
    console.error(
      "usage: soak_client.ts --port PORT --name NAME [--idle-timeout MS] [--heartbeat MS]",
    );
    Deno.exit(2);
  }
  const name = values.name;
  try {
    await runSite({
      port,
      name,
      idleTimeout: Number(values["idle-timeout"]),
      heartbeatMs: Number(values.heartbeat),
      connectFor: Number(values["connect-for"]),
      log: values.verbose ? (line) => console.error(`${name}: ${line}`) : undefined,
    });
  } catch (error) {
    console.error(`${name}: ${(error as Error).name}: ${(error as Error).message}`);
    Deno.exit(3);
  }
}
