/**
 * The fault-injection soak: `deno task soak [--rounds 20] [--clients 4]
 * [--seed 1] [--model-bytes 1048576] [--long] [--no-kill] [--shaped |
 * --no-shaped] [--shaped-rounds 6] [--verbose]`. By default it runs the
 * fault soak, then the shaped scenario ({@linkcode runShapedSoak}: one site
 * behind a 100 ms RTT, 20 Mbit/s link shaped by the proxy, another killed for
 * good, rounds ending on the quorum of the rest).
 *
 * A fedcomm server (`open`, short `resumeTimeout`, `idleTimeout` and
 * `heartbeatMs`), the fault proxy (`_fault_proxy.ts`) in front of it, and one
 * client process per site (`soak_client.ts`, named `site-0`, `site-1`, …)
 * connecting through the proxy, all on 127.0.0.1. Each round the server
 * broadcasts `{ round, attempt: 1, weights }`, then gathers the replies with
 * a quorum (`gatherSettled({ min, grace, timeout })`), and keeps asking the
 * sites that did not answer (sending again to the current session of that
 * name) until every site answered, so the round's aggregate (the sum of the
 * updates, in site order) can be compared exactly with the one computed
 * here without faults. Every fifth round the model is larger.
 *
 * Faults, one or two per round from a seeded plan: the proxy cuts a
 * connection inside a frame header, a frame body, between frames, at a
 * random offset, or inside the handshake of the next connection (a resume);
 * it stalls one or both directions longer than the idle timeout; and a
 * site's process is killed (SIGKILL) and started again, joining as a new
 * session with the same name.
 *
 * What is checked: every site answers every round (else a message was
 * lost); no site's answer for a round arrives twice, and no client takes the
 * same request twice (duplicates); the number of messages a client took
 * equals the number the server sent to that session when the answer is
 * taken (a gap is a lost message, an excess a duplicate), and for late
 * replies equals the `late` event's `replyTo`; the weights arrive intact;
 * the aggregates equal the fault-free ones. The summary is printed as plain
 * lines; the exit code is 1 if anything was lost, duplicated or wrong.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { seededRandom, shuffle } from "../examples/random.ts";
import type { ClientEvent, LateReplyEvent } from "../events.ts";
import { listen, type Server } from "../server.ts";
import { FAULT_KINDS, type FaultKind, FaultProxy, type LinkShape } from "./_fault_proxy.ts";
import { modelFor, type SoakReply, type SoakRequest, updateFor } from "./soak_client.ts";

/** Options of {@linkcode runSoak}. */
export interface SoakOptions {
  /** Rounds to run. */
  rounds: number;
  /** Sites (client processes). */
  clients: number;
  /** The PRNG seed of the fault plan and the proxy. */
  seed: number;
  /** Bytes of the model (a multiple of 4); every fifth round sends `largeFactor` times more. */
  modelBytes: number;
  /** How much larger the occasional large model is. */
  largeFactor: number;
  /** Whether to kill and restart client processes. */
  kill: boolean;
  /** Stop starting rounds after this many ms. */
  timeLimitMs: number;
  /** Progress lines (each round, each fault); default nowhere. */
  log?: (line: string) => void;
}

/** What a soak found. */
export interface SoakReport {
  /** Rounds asked for. */
  rounds: number;
  /** Rounds every site answered. */
  roundsCompleted: number;
  /** Faults the proxy injected, by kind. */
  faults: Record<FaultKind, number>;
  /** Client processes killed (and started again). */
  kills: number;
  /** Server `resume` events. */
  resumes: number;
  /** Server `disconnect` events. */
  disconnects: number;
  /** Server `late` events. */
  late: number;
  /** Messages lost: a site that never answered a round, or a gap in a client's count. */
  lost: number;
  /** Messages duplicated: a second answer of a site for a round, or a request taken twice. */
  duplicated: number;
  /** Whether every round's aggregate equals the fault-free one. */
  aggregatesEqual: boolean;
  /** Anything else that went wrong, one line each. */
  problems: string[];
  /** How long it took, in seconds. */
  seconds: number;
}

/** The server's and the clients' timeouts: short, so that faults are detected quickly. */
const IDLE_TIMEOUT_MS = 1000;
const HEARTBEAT_MS = 250;
const RESUME_TIMEOUT_MS = 10_000;

/**
 * The soak's server: open, with room for every site twice (a killed site's
 * old session may still wait for its resume when its new one joins), and
 * short timeouts so that faults are noticed within a round.
 */
function soakServer(clients: number): Server {
  return listen({
    clients: clients * 2 + 2,
    open: true,
    resumeTimeout: RESUME_TIMEOUT_MS,
    idleTimeout: IDLE_TIMEOUT_MS,
    heartbeatMs: HEARTBEAT_MS,
    handshakeTimeout: 5000,
  });
}
/** How long the first gather of a round waits after its quorum. */
const GRACE_MS = 300;
const GATHER_TIMEOUT_MS = 3000;
/** A site that has not answered a round after this long has lost a message. */
const ROUND_LIMIT_MS = 45_000;
const SEND_TIMEOUT_MS = 30_000;
/** A site whose process exits by itself this often in a row, each soon after its start, is not started again. */
const MAX_QUICK_EXITS = 5;
const CRASH_LOOP_MS = 5000;

const CLIENT_SCRIPT = new URL("./soak_client.ts", import.meta.url);
const ROOT = new URL("../", import.meta.url);

type Action =
  | "cut-header"
  | "cut-body"
  | "cut-boundary"
  | "cut-random"
  | "cut-handshake"
  | "stall-up"
  | "stall-down"
  | "stall-both"
  | "kill";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One run of a site's process. */
interface Run {
  /** Whether its exit is expected (killed, or told to stop). */
  expectExit: boolean;
  /** Killed by the soak (a `kill` fault), not told to stop. */
  killed?: boolean;
  exited: boolean;
  /** `performance.now()` at its start and at its exit. */
  started: number;
  ended?: number;
}

/** One site's client process; started again after a kill or an unexpected exit. */
class SiteProcess {
  readonly name: string;
  readonly #args: string[];
  readonly #onExit: (site: SiteProcess, code: number, stderr: string) => void;
  #child: Deno.ChildProcess | undefined;
  #status: Promise<Deno.CommandStatus> | undefined;
  /** The current (or last) process run. */
  #run: Run = { expectExit: false, exited: false, started: 0 };
  #stderr = "";

  constructor(
    name: string,
    args: string[],
    onExit: (site: SiteProcess, code: number, stderr: string) => void,
  ) {
    this.name = name;
    this.#args = args;
    this.#onExit = onExit;
  }

  /** Starts a new process. */
  start(): void {
    const run: Run = { expectExit: false, exited: false, started: performance.now() };
    this.#run = run;
    this.#stderr = "";
    const child = new Deno.Command(Deno.execPath(), {
      args: this.#args,
      cwd: ROOT.pathname,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    const reading = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr = (this.#stderr + text).slice(-4000);
      }
    })().catch(() => {});
    this.#status = child.status.then(async (status) => {
      await reading;
      run.exited = true;
      run.ended = performance.now();
      if (!run.expectExit) this.#onExit(this, status.code, this.#stderr);
      return status;
    });
  }

  /** How long the current process has run (or ran), in ms. */
  get ranMs(): number {
    return (this.#run.ended ?? performance.now()) - this.#run.started;
  }

  /** Whether the current process has exited. */
  get exited(): boolean {
    return this.#run.exited;
  }

  /** Whether the current (or last) process was killed by the soak. */
  get killed(): boolean {
    return this.#run.killed ?? false;
  }

  /** What the process wrote to stderr lately. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Kills the process (SIGKILL) and waits for it. */
  async kill(): Promise<void> {
    this.#run.expectExit = true;
    this.#run.killed = true;
    try {
      this.#child?.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.#status;
  }

  /** Marks the coming exit as expected (the process was told to stop). */
  expectExit(): void {
    this.#run.expectExit = true;
  }

  /** Waits up to `ms` for the process to exit; kills it after that. Returns its code. */
  async finish(ms: number): Promise<number> {
    this.#run.expectExit = true;
    const timeout = Promise.withResolvers<undefined>();
    const timer = setTimeout(() => timeout.resolve(undefined), ms);
    const status = await Promise.race([this.#status!, timeout.promise]);
    clearTimeout(timer);
    if (status !== undefined) return status.code;
    await this.kill();
    return -1;
  }
}

/** The sessions the server knows, by site name. */
class Sessions {
  /** The live (connected or resuming) session of each site. */
  readonly current = new Map<string, number>();
  readonly nameOf = new Map<number, string>();
  /** Messages the soak sent to each session. */
  readonly sent = new Map<number, number>();
  /** The last request sent to each session. */
  readonly last = new Map<number, { round: number; attempt: number }>();
  #wake: (() => void) | undefined;

  join(id: number, name: string | undefined): void {
    if (name === undefined) return;
    this.nameOf.set(id, name);
    this.current.set(name, id);
    this.#wake?.();
  }

  leave(id: number): void {
    const name = this.nameOf.get(id);
    if (name !== undefined && this.current.get(name) === id) this.current.delete(name);
    this.#wake?.();
  }

  /** Waits for the next join or leave, at most `ms`. */
  async changed(ms: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#wake = resolve;
    const timer = setTimeout(resolve, ms);
    await promise;
    clearTimeout(timer);
    this.#wake = undefined;
  }

  /** Counts a message sent to each of `ids`. */
  sending(ids: readonly number[], round: number, attempt: number): void {
    for (const id of ids) {
      this.sent.set(id, (this.sent.get(id) ?? 0) + 1);
      this.last.set(id, { round, attempt });
    }
  }
}

/** The command line of a site's process, connecting to `port` (the proxy's). */
function siteArgs(port: number, name: string): string[] {
  return [
    "run",
    "--quiet",
    "--allow-net=127.0.0.1",
    CLIENT_SCRIPT.pathname,
    `--port=${port}`,
    `--name=${name}`,
    `--idle-timeout=${IDLE_TIMEOUT_MS}`,
    `--heartbeat=${HEARTBEAT_MS}`,
    "--verbose",
  ];
}

function sameArrays(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * Runs the soak.
 *
 * @param options Rounds, sites, seed, sizes, whether to kill processes.
 * @returns What it found.
 */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const started = performance.now();
  const { rounds, clients, log } = options;
  const random = seededRandom(options.seed * 7919 + 1);
  const problems: string[] = [];
  const problem = (line: string) => {
    problems.push(line);
    log?.(`PROBLEM ${line}`);
  };
  let resumes = 0;
  let disconnects = 0;
  let late = 0;
  let lost = 0;
  let duplicated = 0;
  let kills = 0;
  let roundsCompleted = 0;
  let aggregatesEqual = true;
  let stopping = false;
  /** Per process: the largest counts of repeated and out-of-order requests it reported. */
  const clientCounts = new Map<number, { site: string; repeats: number; outOfOrder: number }>();
  /** Per session: messages sent minus messages its client had taken, at its last answer. */
  const gaps = new Map<number, number>();
  /** Sessions whose `lastReceived` disagreed with the client's count. */
  const miscounted = new Set<number>();

  await using server = soakServer(clients);
  await using proxy = new FaultProxy({
    targetPort: server.port,
    seed: options.seed,
    randomWindow: 2 * options.modelBytes,
  });
  const sessions = new Sessions();
  server.addEventListener("join", (e: ClientEvent) => {
    sessions.join(e.clientId, e.name);
    log?.(`join ${e.name} as ${e.clientId}`);
  });
  server.addEventListener("leave", (e: ClientEvent) => {
    sessions.leave(e.clientId);
    log?.(`leave ${e.name} ${e.clientId}: ${e.error?.message ?? "closed"}`);
  });
  server.addEventListener("disconnect", () => disconnects++);
  server.addEventListener("resume", (e: ClientEvent) => {
    resumes++;
    log?.(`resume ${e.name} ${e.clientId}`);
  });
  server.addEventListener("late", (e: LateReplyEvent) => {
    late++;
    const reply = e.value as SoakReply;
    if (reply.taken !== e.replyTo) {
      problem(
        `late reply of ${reply.site} (client ${e.clientId}) answers message ${e.replyTo} ` +
          `but was the client's message ${reply.taken}`,
      );
    }
    if (!(e.replyTo < e.latest)) {
      problem(`late event of client ${e.clientId}: replyTo ${e.replyTo} ≥ latest ${e.latest}`);
    }
    noteClient(reply);
  });

  function noteClient(reply: SoakReply): void {
    const counts = clientCounts.get(reply.pid);
    clientCounts.set(reply.pid, {
      site: reply.site,
      repeats: Math.max(counts?.repeats ?? 0, reply.repeats),
      outOfOrder: Math.max(counts?.outOfOrder ?? 0, reply.outOfOrder),
    });
  }

  const sites = Array.from({ length: clients }, (_, i) => `site-${i}`);
  const processes = new Map<string, SiteProcess>();
  const quickExits = new Map<string, number>();
  const onExit = (site: SiteProcess, code: number, stderr: string) => {
    if (stopping) return;
    const tail = stderr.trim().split("\n").slice(-5).join(" | ");
    problem(`${site.name}'s process exited by itself (code ${code}): ${tail}`);
    // Only a crash loop stops the restarts: exits soon after a start, one after another.
    const count = site.ranMs < CRASH_LOOP_MS ? (quickExits.get(site.name) ?? 0) + 1 : 0;
    quickExits.set(site.name, count);
    if (count <= MAX_QUICK_EXITS) site.start();
    else problem(`${site.name} exited ${count} times in a row on start: not started again`);
  };
  for (const name of sites) {
    const site = new SiteProcess(name, siteArgs(proxy.port, name), onExit);
    processes.set(name, site);
    site.start();
  }

  const pending = new Set<Promise<unknown>>();
  const track = (task: Promise<unknown>) => {
    const quiet = task.catch((error) => problem(`fault task failed: ${describe(error)}`));
    pending.add(quiet);
    quiet.finally(() => pending.delete(quiet));
  };

  /** Sites whose process is being killed and started again. */
  const killing = new Set<string>();
  const stallMs = () => Math.round(IDLE_TIMEOUT_MS * (1.3 + 0.7 * random()));
  async function inject(action: Action, round: number): Promise<void> {
    switch (action) {
      case "cut-header":
      case "cut-body":
      case "cut-boundary":
      case "cut-random": {
        const kind = action.slice(4) as "header" | "body" | "boundary" | "random";
        const fault = await proxy.cut({ kind });
        if (fault) log?.(`round ${round}: ${fault.kind} ${fault.name} ${fault.direction}`);
        break;
      }
      case "cut-handshake": {
        // The cut waits for the next connection: the resume that the body cut causes.
        const handshake = proxy.cut({ kind: "handshake" });
        await proxy.cut({ kind: "body" });
        const fault = await handshake;
        if (fault) log?.(`round ${round}: ${fault.kind} ${fault.name} ${fault.direction}`);
        break;
      }
      case "stall-up":
      case "stall-down":
      case "stall-both": {
        const direction = action.slice(6) as "up" | "down" | "both";
        const fault = await proxy.stall({ ms: stallMs(), direction });
        if (fault) log?.(`round ${round}: ${fault.kind} ${fault.name} ${fault.offset} ms`);
        break;
      }
      case "kill": {
        const name = sites[Math.floor(random() * sites.length)];
        if (killing.has(name)) break;
        killing.add(name);
        try {
          const site = processes.get(name)!;
          await site.kill();
          kills++;
          log?.(`round ${round}: killed ${name}`);
          await sleep(100 + random() * 400);
          if (!stopping) site.start();
        } finally {
          killing.delete(name);
        }
        break;
      }
    }
  }

  const actions: Action[] = [
    "cut-header",
    "cut-body",
    "cut-boundary",
    "cut-random",
    "cut-handshake",
    "stall-up",
    "stall-down",
    "stall-both",
  ];
  if (options.kill) actions.push("kill");
  const plan = shuffle([...actions], random);

  /** Sends one request to sessions, counting it for each. */
  function ask(ids: number[], request: SoakRequest): void {
    if (ids.length === 0) return;
    sessions.sending(ids, request.round, request.attempt);
    const sending = ids.length === 1
      ? server.send(new Map([[ids[0], request]]), { timeout: SEND_TIMEOUT_MS })
      : server.broadcast(request, { ids, timeout: SEND_TIMEOUT_MS });
    sending.catch((error) => {
      // A session gone for good: its site is asked again on its next session.
      if (error?.name !== "PeerDisconnectedError") {
        problem(`sending round ${request.round} to [${ids}]: ${describe(error)}`);
      }
    });
  }

  try {
    await waitForSites(sessions, sites, 30_000);
    log?.(`all ${clients} sites joined`);
    for (let round = 0; round < rounds; round++) {
      if (performance.now() - started > options.timeLimitMs) {
        problem(`time limit of ${options.timeLimitMs} ms reached after ${round} rounds`);
        break;
      }
      const roundStarted = performance.now();
      const large = round % 5 === 4;
      const length = (large ? options.modelBytes * options.largeFactor : options.modelBytes) / 4;
      const weights = modelFor(round, length);
      const answers = new Map<string, SoakReply>();
      const attempts = new Map<string, number>();
      const asked = new Map<string, number>();
      const first = sites.filter((site) => sessions.current.has(site));
      const ids = first.map((site) => sessions.current.get(site)!);
      for (const site of first) {
        attempts.set(site, 1);
        asked.set(site, sessions.current.get(site)!);
      }
      ask(ids, { round, attempt: 1, weights });
      const action = plan[round % plan.length];
      track(sleep(random() * 300).then(() => inject(action, round)));
      if (random() < 0.3) {
        const extra = plan[Math.floor(random() * plan.length)];
        track(sleep(random() * 1500).then(() => inject(extra, round)));
      }

      const accept = (id: number, value: unknown) => {
        const reply = value as SoakReply;
        const site = sessions.nameOf.get(id);
        noteClient(reply);
        if (reply.site !== site) {
          problem(`client ${id} (${site}) answered as ${reply.site}`);
          return;
        }
        const last = sessions.last.get(id);
        if (reply.round !== round || reply.attempt !== last?.attempt) {
          problem(
            `${site} (client ${id}) answered round ${reply.round} attempt ${reply.attempt}, ` +
              `the latest request was round ${round} attempt ${last?.attempt}`,
          );
          duplicated++;
          return;
        }
        // Sent minus taken: a rise is a message lost, a fall one taken twice.
        const gap = (sessions.sent.get(id) ?? 0) - reply.taken;
        const before = gaps.get(id) ?? 0;
        if (gap !== before) {
          gaps.set(id, gap);
          problem(
            `${site} (client ${id}) had taken ${reply.taken} messages when answering message ` +
              `${sessions.sent.get(id)}`,
          );
          if (gap > before) lost += gap - before;
          else duplicated += before - gap;
        }
        if (reply.lastReceived !== reply.taken && !miscounted.has(id)) {
          miscounted.add(id);
          problem(`${site}: lastReceived ${reply.lastReceived}, but it took ${reply.taken}`);
        }
        if (!reply.weightsOk) problem(`${site}: the weights of round ${round} arrived changed`);
        if (answers.has(site)) {
          problem(`${site} answered round ${round} twice`);
          duplicated++;
          return;
        }
        answers.set(site, reply);
      };

      let gathers = 0;
      while (answers.size < sites.length) {
        if (performance.now() - roundStarted > ROUND_LIMIT_MS) break;
        for (const site of sites) {
          const current = sessions.current.get(site);
          if (answers.has(site) || current === undefined || asked.get(site) === current) continue;
          const attempt = (attempts.get(site) ?? 0) + 1;
          attempts.set(site, attempt);
          asked.set(site, current);
          ask([current], { round, attempt, weights });
        }
        // Sites asked on their current session (not on one gone for good).
        const waiting = sites.filter((site) =>
          !answers.has(site) && asked.has(site) && asked.get(site) === sessions.current.get(site)
        );
        if (waiting.length === 0) {
          await sessions.changed(500);
          continue;
        }
        const waitIds = waiting.map((site) => asked.get(site)!);
        const quorum = gathers++ === 0 && waitIds.length === sites.length;
        const result = await server.gatherSettled({
          ids: waitIds,
          min: quorum ? Math.max(1, Math.ceil(waitIds.length * 0.75)) : undefined,
          grace: quorum ? GRACE_MS : undefined,
          timeout: GATHER_TIMEOUT_MS,
        });
        for (const [id, value] of result.received) accept(id, value);
        for (const [id, error] of result.failed) {
          const site = sessions.nameOf.get(id)!;
          log?.(`round ${round}: ${site} (client ${id}) did not answer: ${describe(error)}`);
          if (answers.has(site) || sessions.current.get(site) !== id) continue;
          // Still its session (slow, stalled or resuming): ask it again.
          const attempt = attempts.get(site)! + 1;
          attempts.set(site, attempt);
          ask([id], { round, attempt, weights });
        }
      }

      const missing = sites.filter((site) => !answers.has(site));
      if (missing.length > 0) {
        problem(`round ${round}: no answer from ${missing.join(", ")}`);
        lost += missing.length;
        aggregatesEqual = false;
      } else {
        roundsCompleted++;
        const sum = new Float32Array(length);
        const expected = new Float32Array(length);
        for (const site of sites) {
          const update = answers.get(site)!.update;
          const clean = updateFor(round, site, length);
          for (let i = 0; i < length; i++) {
            sum[i] += update[i];
            expected[i] += clean[i];
          }
        }
        if (!sameArrays(sum, expected)) {
          aggregatesEqual = false;
          problem(`round ${round}: the aggregate differs from the fault-free one`);
        }
      }
      const maxAttempt = Math.max(...[...attempts.values()], 1);
      log?.(
        `round ${round}: ${answers.size}/${sites.length} answered, ` +
          `${maxAttempt} attempt(s) at most, ${
            ((performance.now() - roundStarted) / 1000).toFixed(2)
          } s`,
      );
    }
  } catch (error) {
    problem(`the soak failed: ${describe(error)}`);
  } finally {
    stopping = true;
    await stopSites(server, sessions, processes, problem);
    await proxy.stop();
    await Promise.all(pending);
  }
  for (const [pid, counts] of clientCounts) {
    if (counts.repeats > 0) {
      problem(`${counts.site} (process ${pid}) took ${counts.repeats} request(s) twice`);
      duplicated += counts.repeats;
    }
    if (counts.outOfOrder > 0) {
      problem(`${counts.site} (process ${pid}) took ${counts.outOfOrder} request(s) out of order`);
    }
  }
  return {
    rounds,
    roundsCompleted,
    faults: proxy.counts,
    kills,
    resumes,
    disconnects,
    late,
    lost,
    duplicated,
    aggregatesEqual,
    problems,
    seconds: (performance.now() - started) / 1000,
  };
}

async function waitForSites(sessions: Sessions, sites: string[], ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (sites.some((site) => !sessions.current.has(site))) {
    if (performance.now() > deadline) {
      const missing = sites.filter((site) => !sessions.current.has(site));
      throw new Error(`Sites did not join within ${ms} ms: ${missing.join(", ")}`);
    }
    await sessions.changed(500);
  }
}

/**
 * Tells every site to stop (also sites that join meanwhile: a process
 * restarted just before), waits for the processes, kills the stragglers.
 */
async function stopSites(
  server: Server,
  sessions: Sessions,
  processes: Map<string, SiteProcess>,
  problem: (line: string) => void,
): Promise<void> {
  for (const site of processes.values()) site.expectExit();
  const told = new Set<number>();
  const deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    const ids = [...sessions.current.values()].filter((id) => !told.has(id));
    for (const id of ids) told.add(id);
    if (ids.length > 0) {
      server.broadcast({ stop: true }, { ids, timeout: 10_000 }).catch((error) => {
        if (error?.name !== "PeerDisconnectedError") problem(`sending stop: ${describe(error)}`);
      });
    }
    if ([...processes.values()].every((site) => site.exited)) break;
    await sessions.changed(250);
  }
  await Promise.all([...processes.values()].map(async (site) => {
    // A site killed by a fault just before the stop is not started again:
    // it was never told to stop, so its SIGKILL is no failure.
    const killed = site.killed && site.exited;
    const code = await site.finish(1000);
    if (code !== 0 && !killed) {
      const tail = site.stderr.trim().split("\n").slice(-5).join(" | ");
      problem(`${site.name}'s process ended with code ${code} at the stop: ${tail}`);
    }
  }));
}

/**
 * Formats a report as plain lines.
 *
 * @param report What {@linkcode runSoak} found.
 * @returns The lines.
 */
export function formatReport(report: SoakReport): string[] {
  const total = Object.values(report.faults).reduce((a, b) => a + b, 0);
  const kinds = FAULT_KINDS.map((kind) => `${kind} ${report.faults[kind]}`).join(", ");
  return [
    `rounds completed: ${report.roundsCompleted}/${report.rounds}`,
    `faults injected: ${total + report.kills} (${kinds}, kill ${report.kills})`,
    `resumes: ${report.resumes} (disconnects ${report.disconnects})`,
    `kills: ${report.kills}`,
    `late replies: ${report.late}`,
    `messages lost: ${report.lost}`,
    `messages duplicated: ${report.duplicated}`,
    `aggregates equal fault-free: ${report.aggregatesEqual ? "yes" : "no"}`,
    `problems: ${report.problems.length}`,
    ...report.problems.map((line) => `  ${line}`),
    `time: ${report.seconds.toFixed(1)} s`,
  ];
}

/**
 * Whether a report passes: all rounds done, nothing lost or duplicated, the
 * aggregates equal, no other problem.
 *
 * @param report What {@linkcode runSoak} found.
 * @returns True if it passes.
 */
export function passed(report: SoakReport): boolean {
  return report.lost === 0 && report.duplicated === 0 && report.aggregatesEqual &&
    report.roundsCompleted === report.rounds && report.problems.length === 0;
}

/** The shaped site's link, each way: 50 ± 5 ms (a 100 ms round trip) and 20 Mbit/s. */
export const WAN_LINK: LinkShape = { latencyMs: 50, jitterMs: 5, bitsPerSecond: 20e6 };

/** Options of {@linkcode runShapedSoak}. */
export interface ShapedSoakOptions {
  /** Rounds to run. */
  rounds: number;
  /** Sites (client processes), at least 3: one behind {@linkcode WAN_LINK}, one killed. */
  clients: number;
  /** The PRNG seed (the proxy's jitter, the moment of the kill). */
  seed: number;
  /** Bytes of the model (a multiple of 4), the same every round. */
  modelBytes: number;
  /** Stop starting rounds after this many ms. */
  timeLimitMs: number;
  /** Progress lines; default nowhere. */
  log?: (line: string) => void;
}

/** What {@linkcode runShapedSoak} found. */
export interface ShapedSoakReport {
  /** Rounds asked for. */
  rounds: number;
  /** Rounds that reached their quorum with every live site's answer checked. */
  roundsCompleted: number;
  /** The site behind {@linkcode WAN_LINK}. */
  shapedSite: string;
  /** The site killed before round 0 (after it joined) and not started again. */
  deadSite: string;
  /** The quorum of each round (`gatherSettled({ min })`): every site but the dead one. */
  min: number;
  /** Rounds in which the dead site was asked and reported failed (not hung). */
  deadFailed: number;
  /** The shortest round, in seconds (the shaped site's answer is in every quorum). */
  fastestRoundSeconds: number;
  /** The slowest round, in seconds. */
  slowestRoundSeconds: number;
  /** What physics allows at least for a round: the model down and the update up the shaped link. */
  lowerBoundSeconds: number;
  /** The shaped site's ping round trip as the server measured it last, in ms. */
  shapedRttMs: number | undefined;
  /** Whether every round's aggregate over the sites that answered equals the fault-free one. */
  aggregatesEqual: boolean;
  /** Anything that went wrong, one line each. */
  problems: string[];
  /** How long it took, in seconds. */
  seconds: number;
}

/** How long a shaped round may take before it is a failure. */
const SHAPED_ROUND_TIMEOUT_MS = 30_000;

/**
 * Runs the shaped scenario: `site-0` sits behind {@linkcode WAN_LINK} in
 * both directions (the proxy shapes it by the name in its hello), the last
 * site is killed (SIGKILL) once all joined and not started again, and each round
 * broadcasts the model and ends on the quorum of the others
 * (`gatherSettled({ min, grace })`). Checked: every round reaches its
 * quorum, every live site answers it once with intact weights and an
 * unbroken message count, the dead site is reported failed rather than
 * waited for, the aggregate of the sites that answered equals the
 * fault-free one, and no round is faster than the shaped link allows.
 *
 * @param options Rounds, sites, seed, model size.
 * @returns What it found.
 */
export async function runShapedSoak(options: ShapedSoakOptions): Promise<ShapedSoakReport> {
  const started = performance.now();
  const { rounds, clients, log } = options;
  if (clients < 3) throw new RangeError("the shaped soak needs at least 3 clients");
  const random = seededRandom(options.seed * 104_729 + 3);
  const problems: string[] = [];
  const problem = (line: string) => {
    problems.push(line);
    log?.(`PROBLEM ${line}`);
  };
  const sites = Array.from({ length: clients }, (_, i) => `site-${i}`);
  const shapedSite = sites[0];
  const deadSite = sites[clients - 1];
  const live = sites.slice(0, -1);
  const min = live.length;
  let roundsCompleted = 0;
  let deadFailed = 0;
  let aggregatesEqual = true;
  let fastest = Infinity;
  let slowest = 0;
  let shapedRttMs: number | undefined;
  let stopping = false;

  await using server = soakServer(clients);
  await using proxy = new FaultProxy({
    targetPort: server.port,
    seed: options.seed,
    shape: ({ name }) => name === shapedSite ? { up: WAN_LINK, down: WAN_LINK } : undefined,
  });
  const sessions = new Sessions();
  server.addEventListener("join", (e: ClientEvent) => {
    sessions.join(e.clientId, e.name);
    log?.(`join ${e.name} as ${e.clientId}`);
  });
  server.addEventListener("leave", (e: ClientEvent) => {
    sessions.leave(e.clientId);
    log?.(`leave ${e.name} ${e.clientId}: ${e.error?.message ?? "closed"}`);
  });
  server.addEventListener("late", (e: LateReplyEvent) => {
    problem(`late reply of client ${e.clientId}: no round of this scenario asks twice`);
  });

  const processes = new Map<string, SiteProcess>();
  for (const name of sites) {
    const site = new SiteProcess(name, siteArgs(proxy.port, name), (site, code, stderr) => {
      if (stopping) return;
      const tail = stderr.trim().split("\n").slice(-5).join(" | ");
      problem(`${site.name}'s process exited by itself (code ${code}): ${tail}`);
    });
    processes.set(name, site);
    site.start();
  }

  const length = options.modelBytes / 4;
  const bytesPerSecond = WAN_LINK.bitsPerSecond! / 8;
  const burst = bytesPerSecond / 100; // the shaper's default bucket: 10 ms
  const oneWay = (WAN_LINK.latencyMs! - WAN_LINK.jitterMs!) / 1000;
  const lowerBoundSeconds = 2 * (Math.max(0, options.modelBytes - burst) / bytesPerSecond + oneWay);

  try {
    await waitForSites(sessions, sites, 30_000);
    log?.(`all ${clients} sites joined; ${shapedSite} shaped, ${deadSite} to be killed`);
    // Dead before round 0 (after it joined), never started again: it cannot
    // answer, so every quorum needs the shaped site.
    await sleep(random() * 200);
    await processes.get(deadSite)!.kill();
    log?.(`killed ${deadSite}`);
    for (let round = 0; round < rounds; round++) {
      if (performance.now() - started > options.timeLimitMs) {
        problem(`time limit of ${options.timeLimitMs} ms reached after ${round} rounds`);
        break;
      }
      const roundStarted = performance.now();
      const weights = modelFor(round, length);
      const asked = sites.filter((site) => sessions.current.has(site));
      const ids = asked.map((site) => sessions.current.get(site)!);
      const request: SoakRequest = { round, attempt: 1, weights };
      sessions.sending(ids, round, 1);
      server.broadcast(request, { ids, timeout: SEND_TIMEOUT_MS }).catch((error) => {
        if (error?.name !== "PeerDisconnectedError") {
          problem(`sending round ${round}: ${describe(error)}`);
        }
      });
      const result = await server.gatherSettled({
        ids,
        min,
        grace: GRACE_MS,
        timeout: SHAPED_ROUND_TIMEOUT_MS,
      });
      const seconds = (performance.now() - roundStarted) / 1000;
      const answers = new Map<string, SoakReply>();
      for (const [id, value] of result.received) {
        const site = sessions.nameOf.get(id)!;
        const reply = value as SoakReply;
        if (reply.site !== site || reply.round !== round || reply.attempt !== 1) {
          problem(`${site} (client ${id}) answered ${reply.site} round ${reply.round}`);
          continue;
        }
        if (reply.taken !== sessions.sent.get(id) || reply.lastReceived !== reply.taken) {
          problem(
            `${site} had taken ${reply.taken} messages (lastReceived ${reply.lastReceived}) ` +
              `when answering message ${sessions.sent.get(id)}`,
          );
        }
        if (reply.repeats > 0 || reply.outOfOrder > 0) problem(`${site}: a request taken twice`);
        if (!reply.weightsOk) problem(`${site}: the weights of round ${round} arrived changed`);
        if (site === deadSite) problem(`${deadSite} answered after it was killed`);
        if (answers.has(site)) problem(`${site} answered round ${round} twice`);
        answers.set(site, reply);
      }
      for (const [id, error] of result.failed) {
        const site = sessions.nameOf.get(id)!;
        log?.(`round ${round}: ${site} (client ${id}) failed: ${describe(error)}`);
        if (site === deadSite) deadFailed++;
      }
      const missing = live.filter((site) => !answers.has(site));
      if (!result.quorum || missing.length > 0) {
        problem(`round ${round}: no quorum (${answers.size}/${min}), missing ${missing}`);
        aggregatesEqual = false;
      } else {
        roundsCompleted++;
        fastest = Math.min(fastest, seconds);
        slowest = Math.max(slowest, seconds);
        const sum = new Float32Array(length);
        const expected = new Float32Array(length);
        // The sites that answered, in site order.
        for (const site of sites.filter((site) => answers.has(site))) {
          const update = answers.get(site)!.update;
          const clean = updateFor(round, site, length);
          for (let i = 0; i < length; i++) {
            sum[i] += update[i];
            expected[i] += clean[i];
          }
        }
        if (!sameArrays(sum, expected)) {
          aggregatesEqual = false;
          problem(`round ${round}: the aggregate differs from the fault-free one`);
        }
      }
      const rtt = server.stats().find((s) => s.name === shapedSite && s.state === "connected");
      shapedRttMs = rtt?.rttMs ?? shapedRttMs;
      log?.(
        `round ${round}: ${answers.size}/${asked.length} answered ` +
          `(quorum ${result.quorum}), ${seconds.toFixed(2)} s`,
      );
    }
  } catch (error) {
    problem(`the shaped soak failed: ${describe(error)}`);
  } finally {
    stopping = true;
    const dead = processes.get(deadSite)!;
    processes.delete(deadSite);
    if (!dead.exited) problem(`${deadSite} was not killed`);
    await stopSites(server, sessions, processes, problem);
    await proxy.stop().catch((error) => problem(`the proxy: ${describe(error)}`));
  }
  if (roundsCompleted > 0 && fastest < lowerBoundSeconds) {
    problem(
      `a round took ${fastest.toFixed(3)} s, less than the shaped link allows ` +
        `(${lowerBoundSeconds.toFixed(3)} s): the link was not shaped`,
    );
  }
  const rttFloor = 2 * oneWay * 1000;
  if (shapedRttMs === undefined) problem(`no round trip measured for ${shapedSite}`);
  else if (shapedRttMs < rttFloor) {
    problem(`${shapedSite}'s round trip is ${shapedRttMs.toFixed(1)} ms, under ${rttFloor} ms`);
  }
  if (rounds > 1 && deadFailed < 1) problem(`${deadSite} was never reported failed`);
  return {
    rounds,
    roundsCompleted,
    shapedSite,
    deadSite,
    min,
    deadFailed,
    fastestRoundSeconds: roundsCompleted > 0 ? fastest : 0,
    slowestRoundSeconds: slowest,
    lowerBoundSeconds,
    shapedRttMs,
    aggregatesEqual,
    problems,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Formats a shaped report as plain lines.
 *
 * @param report What {@linkcode runShapedSoak} found.
 * @returns The lines.
 */
export function formatShapedReport(report: ShapedSoakReport): string[] {
  const rtt = report.shapedRttMs === undefined ? "none" : `${report.shapedRttMs.toFixed(1)} ms`;
  return [
    `shaped rounds completed on quorum ${report.min}/${report.min + 1}: ` +
    `${report.roundsCompleted}/${report.rounds}`,
    `shaped site: ${report.shapedSite} (50 ± 5 ms each way, 20 Mbit/s), ping round trip ${rtt}`,
    `dead site: ${report.deadSite} (killed before round 0), reported failed in ${report.deadFailed} rounds`,
    `shaped round time: ${report.fastestRoundSeconds.toFixed(2)}-${
      report.slowestRoundSeconds.toFixed(2)
    } s (physics: at least ${report.lowerBoundSeconds.toFixed(2)} s)`,
    `shaped aggregates equal fault-free: ${report.aggregatesEqual ? "yes" : "no"}`,
    `shaped problems: ${report.problems.length}`,
    ...report.problems.map((line) => `  ${line}`),
    `shaped time: ${report.seconds.toFixed(1)} s`,
  ];
}

/**
 * Whether a shaped report passes: every round on its quorum, aggregates equal, no problem.
 *
 * @param report What {@linkcode runShapedSoak} found.
 * @returns True if it passes.
 */
export function passedShaped(report: ShapedSoakReport): boolean {
  return report.roundsCompleted === report.rounds && report.aggregatesEqual &&
    report.problems.length === 0;
}

const USAGE = `Usage: deno task soak [options]

  --rounds N        rounds to run (default 20; 200 with --long)
  --clients N       client processes (default 4)
  --seed N          seed of the fault plan (default 1)
  --model-bytes N   model size, a multiple of 4 (default 1048576; every fifth round 4× that,
                    16× with --long)
  --long            a longer run: 200 rounds, a time limit of 30 minutes (about 3 minutes)
  --no-kill         do not kill and restart client processes
  --shaped          run only the shaped scenario (site-0 behind a 100 ms RTT, 20 Mbit/s link,
                    the last site killed for good, rounds ending on the quorum of the others)
  --no-shaped       run only the fault soak (by default both run, the fault soak first)
  --shaped-rounds N rounds of the shaped scenario (default 6; 30 with --long)
  --verbose         print each round and fault on stderr`;

function positiveInteger(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new TypeError(`--${name} must be a positive integer`);
  }
  return n;
}

/**
 * The command line.
 *
 * @param args The arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let options: SoakOptions;
  let scenarios: { faults: boolean; shaped: boolean };
  let shapedRounds: number;
  try {
    const { values } = parseArgs({
      args,
      options: {
        rounds: { type: "string" },
        clients: { type: "string" },
        seed: { type: "string" },
        "model-bytes": { type: "string" },
        long: { type: "boolean", default: false },
        kill: { type: "boolean", default: true },
        "no-kill": { type: "boolean", default: false },
        shaped: { type: "boolean", default: false },
        "no-shaped": { type: "boolean", default: false },
        "shaped-rounds": { type: "string" },
        verbose: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (values.shaped && values["no-shaped"]) {
      throw new TypeError("--shaped and --no-shaped exclude each other");
    }
    scenarios = { faults: !values.shaped, shaped: !values["no-shaped"] };
    shapedRounds = positiveInteger("shaped-rounds", values["shaped-rounds"], values.long ? 30 : 6);
    const modelBytes = positiveInteger("model-bytes", values["model-bytes"], 1 << 20);
    if (modelBytes % 4 !== 0) throw new TypeError("--model-bytes must be a multiple of 4");
    options = {
      rounds: positiveInteger("rounds", values.rounds, values.long ? 200 : 20),
      clients: positiveInteger("clients", values.clients, 4),
      seed: positiveInteger("seed", values.seed, 1),
      modelBytes,
      largeFactor: values.long ? 16 : 4,
      kill: values.kill && !values["no-kill"],
      timeLimitMs: values.long ? 30 * 60_000 : 100_000,
      log: values.verbose ? (line) => console.error(line) : undefined,
    };
    if (scenarios.shaped && options.clients < 3) {
      throw new TypeError("the shaped scenario needs --clients 3 or more");
    }
  } catch (error) {
    console.error(`error: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  let ok = true;
  if (scenarios.faults) {
    console.log(
      `fedcomm soak: seed ${options.seed}, ${options.clients} clients, ${options.rounds} rounds, ` +
        `model ${mib(options.modelBytes)} (every fifth round ${
          mib(options.modelBytes * options.largeFactor)
        }), kills ${options.kill ? "on" : "off"}`,
    );
    const report = await runSoak(options);
    for (const line of formatReport(report)) console.log(line);
    ok &&= passed(report);
  }
  if (scenarios.shaped) {
    console.log(
      `fedcomm shaped soak: seed ${options.seed}, ${options.clients} clients, ` +
        `${shapedRounds} rounds, model ${mib(options.modelBytes)}`,
    );
    const report = await runShapedSoak({
      rounds: shapedRounds,
      clients: options.clients,
      seed: options.seed,
      modelBytes: options.modelBytes,
      timeLimitMs: options.timeLimitMs,
      log: options.log,
    });
    for (const line of formatShapedReport(report)) console.log(line);
    ok &&= passedShaped(report);
  }
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
