/**
 * The coordinator of an FL job: it runs the rounds of a {@linkcode Strategy}
 * over the sites of a fedcomm {@linkcode Server} (see `round.ts` for one
 * round), keeps the {@linkcode Cohort} from the server's events, records
 * each round (`records.ts`), checkpoints after each completed round
 * (`checkpoint.ts`), and resumes from the checkpoint when it is started
 * again on the same job directory.
 *
 * @module
 */

import type { ClientEvent, LateReplyEvent, RefuseEvent, Server } from "../mod.ts";
import { WeightedSum } from "./aggregate.ts";
import { Cohort, type SiteSnapshot } from "./cohort.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { FedAvg } from "./fed_avg.ts";
import {
  checkOptions,
  type CoordinatorOptions,
  type JobResult,
  type JobSettings,
  type JobSnapshot,
  type JobState,
} from "./job.ts";
import { FL_VERSION, type StopMessage, type TaskKind } from "./messages.ts";
import { Records, type RoundRecord, Totals } from "./records.ts";
import { Round, type RoundOutcome } from "./round.ts";
import type { Strategy } from "./strategy.ts";
import { checkCompatible, tensorData, type Weights } from "./weights.ts";

/** The events of a {@linkcode Coordinator}. */
export interface CoordinatorEventMap {
  /** A round (or an evaluation) ended: `detail` is its record. */
  round: CustomEvent<RoundRecord>;
  /** A site changed (joined, dropped, took a task, answered, …): `detail` is its snapshot. */
  site: CustomEvent<SiteSnapshot>;
}

/**
 * Runs an FL job on a server's sites; an `EventTarget` of `"round"` and
 * `"site"` events ({@linkcode CoordinatorEventMap}).
 *
 * A round samples `sitesPerRound` of the sites available (connected, idle,
 * not removed; the same ones for the same seed), sends them the task with
 * the strategy's config, folds the valid results into a weighted sum as
 * they arrive, and ends when all answered, at `roundTimeout`, or `grace` ms
 * after `minResults` came; the strategy then makes the next model. With a
 * `dir`, each round's record goes to `rounds.jsonl`, refused logins to
 * `audit.jsonl`, and a checkpoint is written after each completed round; a
 * new coordinator on that directory resumes after the last one, and
 * recognises the sites by name when they connect again. The sites are
 * identified by their name (`connect({ name })`), else `props.site`, else
 * their id.
 *
 * Memory: updates are never held together; from round 2 on a round
 * allocates nothing model-sized. The job holds the global model, one f64 sum
 * (emptied each round), the strategy's state (FedAdam, FedYogi: m and v),
 * and the uploads read and not folded yet (the server's `receiveBufferBytes`)
 * plus the one being folded. The next model is written into the global
 * model's memory, except the `model` you pass and a model whose broadcast did
 * not complete (then new memory). `"round"` events carry no model.
 * `deno task bench --only=fl` measures the peak (checked against its floor).
 *
 * @example A two-round job with one site on loopback
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen } from "@fedcomm/fedcomm";
 * import { Coordinator } from "@fedcomm/fedcomm/fl";
 *
 * await using server = listen({ clients: 4, open: true });
 * const coordinator = new Coordinator(server, {
 *   job: "demo", model: { b: new Float32Array([0, 0]) }, rounds: 2,
 * });
 * const site = (async () => {
 *   await using client = await connect({ port: server.port, name: "site-a" });
 *   while (true) {
 *     const message = await client.recv() as Record<string, any>;
 *     if (message.type === "stop") return message.reason;
 *     const weights = { b: message.weights.b.map((w: number) => w + 1) };
 *     await client.reply({ fl: 1, type: "result", task: message.task, round: message.round,
 *       samples: 10, metrics: { loss: 1 / message.round }, weights });
 *   }
 * })();
 * const result = await coordinator.run();
 * assert.equal(await site, "done");
 * assert.equal(result.rounds, 2);
 * assert.deepStrictEqual(result.weights, { b: new Float32Array([2, 2]) });
 * assert.equal(coordinator.snapshot().sites[0].name, "site-a");
 * ```
 */
export class Coordinator extends EventTarget {
  readonly #server: Server;
  readonly #settings: JobSettings;
  readonly #strategy: Strategy;
  readonly #cohort: Cohort;
  #totals = new Totals();
  #records: Records | undefined;
  #recent: RoundRecord[] = [];
  #global: Weights;
  /** The caller's `model`, while the global model may share its memory: never written. */
  #initial: Weights | undefined;
  /** Models whose memory a broadcast may still be sending: never written. */
  readonly #lent = new WeakSet<Weights>();
  /** The weighted sum every train round folds into (made at the first). */
  #sum: WeightedSum | undefined;
  #completed = 0;
  #resumedFrom = 0;
  #round: Round | undefined;
  #late: string[] = [];
  #state: JobState = "idle";
  #reason: string | undefined;
  readonly #stopping = new AbortController();
  #metrics = { train: {} as Record<string, number>, evaluate: {} as Record<string, number> };
  #bytesAtStart = { received: 0, sent: 0 };

  /**
   * Prepares a job on `server` (nothing is sent before {@linkcode Coordinator.run}).
   *
   * @param server The server the sites connect to (open membership suits most jobs).
   * @param options The job: its name, model, rounds, strategy, sampling, quorum,
   * deadlines and directory.
   * @throws {TypeError} If `job` or `model` is invalid.
   * @throws {RangeError} If a count or a time is out of range.
   */
  constructor(server: Server, options: CoordinatorOptions) {
    super();
    this.#settings = checkOptions(options);
    this.#server = server;
    this.#strategy = options.strategy ?? new FedAvg();
    this.#global = this.#initial = options.model;
    this.#cohort = new Cohort({
      onChange: (site) => this.dispatchEvent(new CustomEvent("site", { detail: site })),
    });
  }

  /** The job's sites. */
  get cohort(): Cohort {
    return this.#cohort;
  }

  /**
   * Runs the job: every round after the checkpoint's (if any), then sends
   * `stop` to every site. It can run once.
   *
   * @param options A signal that stops the job cleanly, as {@linkcode Coordinator.stop} does.
   * @returns What the job did, and the final model.
   * @throws {Deno.errors.Busy} If it was run before.
   * @throws {TypeError} If the job directory holds a checkpoint of another job,
   * strategy or model.
   * @throws {TimeoutError} If `minSites` were not available within `waitTimeout`
   * (the checkpoint stays: a new coordinator resumes from it).
   */
  async run(options?: { signal?: AbortSignal }): Promise<JobResult> {
    if (this.#state !== "idle") {
      throw new Deno.errors.Busy(`Job "${this.#settings.job}" was run already`);
    }
    this.#state = "waiting";
    const signal = options?.signal;
    const onAbort = () => this.stop(`aborted: ${String(signal?.reason)}`);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const detach = new AbortController();
    const early: RefuseEvent[] = []; // refusals while the checkpoint loads, counted after
    const collect = (e: Event) => early.push(e as RefuseEvent);
    this.#server.addEventListener("refuse", collect);
    try {
      await this.#resume().finally(() => this.#server.removeEventListener("refuse", collect));
      this.#attach(detach.signal);
      early.forEach(this.#refused);
      while (this.#completed < this.#settings.rounds && !this.#stopping.signal.aborted) {
        await this.#oneRound(this.#completed + 1);
      }
      const stopped = this.#stopping.signal.aborted;
      this.#reason = stopped ? this.#reason : "done";
      await this.#sendStop(this.#reason!);
      this.#state = stopped ? "stopped" : "done";
      return this.#result();
    } catch (error) {
      this.#state = "failed";
      this.#reason = (error as Error)?.message ?? String(error);
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      detach.abort();
      await this.#records?.close();
    }
  }

  /**
   * The job now, as plain JSON (for the operator page).
   *
   * @returns The job's state, round, sites, recent rounds and totals.
   */
  snapshot(): JobSnapshot {
    this.#refresh();
    return {
      job: this.#settings.job,
      state: this.#state,
      round: this.#round?.round ?? this.#completed,
      rounds: this.#settings.rounds,
      resumedFrom: this.#resumedFrom,
      strategy: this.#strategy.name,
      sites: this.#cohort.sites(),
      recent: [...this.#recent],
      totals: this.#totals.get(),
      reason: this.#reason ?? null,
    };
  }

  /**
   * Removes a site from the job: its task is cancelled ("removed"), it is
   * never sampled again (also after a restart), and it is sent `stop`
   * ("removed"), which ends its task loop (the public API has no way to
   * close a client's session from the server; a site that connects again is
   * sent `stop` again).
   *
   * @param name The site's name.
   * @throws {RangeError} If no site has that name.
   */
  removeSite(name: string): void {
    this.#cohort.remove(name);
    this.#round?.remove(name);
    const id = this.#cohort.idOf(name);
    if (id !== undefined) this.#stopSite(id, "removed");
  }

  /**
   * Ends the job cleanly: the round running ends at once (its sites get a
   * `cancel`, "stopped"; it is not checkpointed), every site is sent `stop`,
   * and {@linkcode Coordinator.run} resolves with state `"stopped"`.
   *
   * @param reason Why, sent to the sites (default `"stopped"`).
   */
  stop(reason = "stopped"): void {
    if (this.#stopping.signal.aborted || this.#state === "done" || this.#state === "failed") return;
    this.#reason = reason;
    if (this.#state !== "idle") this.#state = "stopping";
    this.#stopping.abort(new Error(`Job stopped: ${reason}`));
    this.#round?.stop(reason);
  }

  /** Takes up the checkpoint and the records of the job directory, if any. */
  async #resume(): Promise<void> {
    const { dir, job } = this.#settings;
    this.#bytesAtStart = { received: this.#server.bytesReceived, sent: this.#server.bytesSent };
    if (dir === undefined) return;
    const checkpoint = await loadCheckpoint(dir);
    if (checkpoint !== undefined) {
      if (checkpoint.job !== job) {
        throw new TypeError(`Checkpoint in "${dir}" is for job "${checkpoint.job}", not "${job}"`);
      }
      if (checkpoint.strategy !== this.#strategy.name) {
        throw new TypeError(
          `Checkpoint in "${dir}" is of strategy "${checkpoint.strategy}", not "${this.#strategy.name}"`,
        );
      }
      checkCompatible(this.#global, checkpoint.weights, "Checkpoint model");
      this.#strategy.restore(checkpoint.strategyState);
      this.#global = checkpoint.weights;
      this.#initial = undefined;
      this.#cohort.restore(checkpoint.sites);
      this.#totals = new Totals(checkpoint.totals);
      this.#completed = this.#resumedFrom = checkpoint.round;
    }
    const keep = this.#settings.recentRounds;
    this.#records = await Records.open(dir, { after: this.#completed, keep });
    this.#recent = this.#records.recent;
  }

  /** Listens to the server's events until `signal` aborts. */
  #attach(signal: AbortSignal): void {
    const server = this.#server, cohort = this.#cohort;
    const on = <E extends Event>(type: string, listener: (event: E) => void) =>
      server.addEventListener(type, listener as EventListener, { signal });
    on<ClientEvent>("join", (e) => {
      const name = cohort.join(e.clientId, Cohort.nameOf(e.clientId, e.name, e.props));
      if (cohort.site(name)?.removed) this.#stopSite(e.clientId, "removed");
    });
    on<ClientEvent>("disconnect", (e) => cohort.drop(e.clientId));
    on<ClientEvent>("resume", (e) => cohort.resume(e.clientId));
    on<ClientEvent>("leave", (e) => {
      this.#round?.left(e.clientId, e.error);
      cohort.leave(e.clientId);
    });
    on<LateReplyEvent>("late", (e) => {
      const name = cohort.nameOfId(e.clientId) ?? String(e.clientId);
      this.#totals.add({ late: 1 });
      cohort.late(name);
      if (this.#round !== undefined) this.#round.late(name);
      else this.#late.push(name);
      server.recycle(e.value);
    });
    on<RefuseEvent>("refuse", this.#refused);
    this.#refresh();
  }

  readonly #refused = (e: RefuseEvent): void => {
    this.#totals.add({ refused: 1 });
    this.#records?.refused(e).catch(() => {});
  };

  /** One round: wait for sites, train, maybe evaluate, then checkpoint. */
  async #oneRound(round: number): Promise<void> {
    const { minSites, waitTimeout, evaluateEvery } = this.#settings;
    if (!(await this.#waitSites(minSites, waitTimeout))) return;
    const train = await this.#run(round, "train");
    if (train === undefined) return;
    const next = train.sum === undefined ? this.#global : this.#update(train.sum, round);
    if (train.sum !== undefined) this.#metrics.train = train.record.metrics;
    let evaluated = 0;
    if (
      evaluateEvery > 0 && round % evaluateEvery === 0 && (await this.#waitSites(1, waitTimeout))
    ) {
      // The new model is evaluated: the tasks carry it.
      const previous = this.#global;
      this.#global = next;
      const evaluation = await this.#run(round, "evaluate");
      this.#global = previous;
      if (evaluation !== undefined) {
        evaluated = 1;
        if (evaluation.record.quorum) this.#metrics.evaluate = evaluation.record.metrics;
      }
    }
    this.#global = next;
    if (this.#initial !== undefined && !sharesMemory(next, this.#initial)) {
      this.#initial = undefined;
    }
    this.#completed = round;
    this.#totals.add({ rounds: 1, evaluations: evaluated });
    await this.#checkpoint();
  }

  /**
   * The strategy's next model, written into the global model's memory when
   * nothing else may read it: not the caller's, not lent to a broadcast.
   */
  #update(sum: WeightedSum, round: number): Weights {
    const global = this.#global;
    const mine = !this.#lent.has(global) &&
      (this.#initial === undefined || !sharesMemory(global, this.#initial));
    return this.#strategy.update(global, sum, round, mine ? global : undefined);
  }

  /** Waits for `min` available sites; false if the job stopped meanwhile. */
  async #waitSites(min: number, timeout: number): Promise<boolean> {
    this.#state = "waiting";
    this.#refresh();
    try {
      await this.#cohort.waitAvailable(min, { signal: this.#stopping.signal, timeout });
    } catch (error) {
      if (this.#stopping.signal.aborted) return false;
      throw error;
    }
    this.#state = "running";
    return true;
  }

  /** Runs one round of `kind`; undefined if the job stopped during it. */
  async #run(round: number, kind: TaskKind): Promise<RoundOutcome | undefined> {
    if (this.#stopping.signal.aborted) return undefined;
    const ctx = {
      server: this.#server,
      cohort: this.#cohort,
      settings: this.#settings,
      strategy: this.#strategy,
      totals: this.#totals,
      global: this.#global,
      sum: kind === "train" ? (this.#sum ??= new WeightedSum(this.#global)) : undefined,
    };
    const current = new Round(ctx, round, kind, this.#late);
    this.#late = [];
    this.#round = current;
    let outcome: RoundOutcome;
    try {
      outcome = await current.run();
    } finally {
      this.#round = undefined;
      if (current.lent) this.#lent.add(ctx.global);
    }
    if (current.stopped) return undefined;
    this.#recent.push(outcome.record);
    if (this.#recent.length > this.#settings.recentRounds) this.#recent.shift();
    await this.#records?.round(outcome.record);
    this.dispatchEvent(new CustomEvent("round", { detail: outcome.record }));
    return outcome;
  }

  async #checkpoint(): Promise<void> {
    this.#refresh();
    const dir = this.#settings.dir;
    if (dir === undefined) return;
    await saveCheckpoint(dir, {
      job: this.#settings.job,
      round: this.#completed,
      weights: this.#global,
      strategy: this.#strategy.name,
      strategyState: this.#strategy.state(),
      sites: this.#cohort.histories(),
      totals: this.#totals.get(),
      time: new Date().toISOString(),
    });
  }

  /** Brings the cohort and the byte totals up to date from the server. */
  #refresh(): void {
    const server = this.#server;
    this.#cohort.refresh(server.stats());
    const start = this.#bytesAtStart;
    this.#totals.bytes(server.bytesReceived - start.received, server.bytesSent - start.sent);
  }

  /** Sends `stop` to every member still there. */
  async #sendStop(reason: string): Promise<void> {
    const ids = this.#server.stats().filter((s) => s.state !== "gone").map((s) => s.id);
    if (ids.length === 0) return;
    const stop: StopMessage = { fl: FL_VERSION, type: "stop", reason };
    try {
      await this.#server.broadcast(stop, { ids, timeout: 10_000 });
    } catch {
      // A site gone meanwhile (the others still get it), or a cohort not complete.
    }
    this.#refresh();
  }

  /** Sends `stop` to one site, in the background. */
  #stopSite(id: number, reason: string): void {
    const stop: StopMessage = { fl: FL_VERSION, type: "stop", reason };
    this.#server.send({ [id]: stop }, { timeout: 10_000 }).catch(() => {});
  }

  #result(): JobResult {
    this.#refresh();
    return {
      job: this.#settings.job,
      state: this.#state === "done" ? "done" : "stopped",
      reason: this.#reason ?? "done",
      rounds: this.#completed,
      resumedFrom: this.#resumedFrom,
      weights: this.#global,
      metrics: { train: { ...this.#metrics.train }, evaluate: { ...this.#metrics.evaluate } },
      totals: this.#totals.get(),
    };
  }
}

/** Whether two models have a tensor over the same memory. */
function sharesMemory(a: Weights, b: Weights): boolean {
  const buffers = new Set(Object.values(b).map((tensor) => tensorData(tensor).buffer));
  return Object.values(a).some((tensor) => buffers.has(tensorData(tensor).buffer));
}
