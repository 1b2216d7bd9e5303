/**
 * One round of a job: sample the available sites, send each the task (one
 * broadcast: the model is encoded once), fold the results into the job's
 * {@linkcode WeightedSum} as they arrive through `server.uploads()` (the
 * memory of one f64 model, emptied and reused every round; each upload's
 * memory is recycled once folded), and end when every sampled site
 * answered, failed or left, at the deadline, or `grace` ms after the
 * quorum. Answers are taken while the broadcast still sends to slower
 * sites: one slow link delays no other site's answer, and the grace after
 * a quorum runs without it. Sites with no answer by the end get a `cancel`
 * and are `missing` with the reason; a failure or an invalid result is a
 * per-site error; the round goes on without them.
 *
 * @module
 */

import { FedcommError, PeerDisconnectedError, type Server } from "../mod.ts";
import { aggregateMetrics, type MetricsItem, WeightedSum } from "./aggregate.ts";
import type { Cohort } from "./cohort.ts";
import type { JobSettings } from "./job.ts";
import {
  type CancelMessage,
  type CancelReason,
  FL_VERSION,
  parseSiteMessage,
  type TaskKind,
  type TaskMessage,
} from "./messages.ts";
import type { RoundRecord, Totals } from "./records.ts";
import type { Strategy } from "./strategy.ts";
import type { Weights } from "./weights.ts";

/** What a round needs from its job. */
export interface RoundContext {
  readonly server: Server;
  readonly cohort: Cohort;
  readonly settings: JobSettings;
  readonly strategy: Strategy;
  readonly totals: Totals;
  /** The global model the tasks carry. */
  readonly global: Weights;
  /** The job's sum, for a train round: emptied when the round starts, then folded into. */
  readonly sum: WeightedSum | undefined;
}

/** What a round gives back: its record, and for a train round with a quorum, the sum. */
export interface RoundOutcome {
  record: RoundRecord;
  /** The weighted sum of the valid train results (when the quorum was reached). */
  sum: WeightedSum | undefined;
}

/** Why a round ended. */
type Ending = "all" | "deadline" | "grace" | "stopped";

/**
 * The number of a round's task: 2r − 1 for training, 2r for evaluation
 * (unique and increasing within the job, and the same after a restart).
 *
 * @param round The round.
 * @param kind The task's kind.
 * @returns The task number.
 */
export function taskNumber(round: number, kind: TaskKind): number {
  return 2 * round - (kind === "train" ? 1 : 0);
}

/** A round in progress (see the module doc). */
export class Round {
  readonly round: number;
  readonly kind: TaskKind;
  readonly task: number;
  readonly #ctx: RoundContext;
  /** Sampled sites still awaited: id → name. */
  readonly #awaited = new Map<number, string>();
  readonly #sampled: string[] = [];
  readonly #answered: string[] = [];
  readonly #late: string[];
  readonly #missing: { site: string; reason: string }[] = [];
  readonly #failed: { site: string; error: string }[] = [];
  readonly #metrics: MetricsItem[] = [];
  readonly #sum: WeightedSum | undefined;
  #lent = false;
  /** Aborted when the round ends: the answers are not taken any more. */
  readonly #end = new AbortController();
  /** Aborted when the round ends with sites awaited, or at the deadline: the broadcast stops. */
  readonly #sending = new AbortController();
  #ending: Ending | undefined;
  #stopReason = "";
  #timers: ReturnType<typeof setTimeout>[] = [];

  /**
   * Prepares round `round` of kind `kind`.
   *
   * @param ctx The job.
   * @param round The round.
   * @param kind Train or evaluate.
   * @param late Sites whose late replies came since the last round's record.
   * @throws {TypeError} If a train round's context has no sum.
   */
  constructor(ctx: RoundContext, round: number, kind: TaskKind, late: string[]) {
    if (kind === "train" && !(ctx.sum instanceof WeightedSum)) {
      throw new TypeError(`Round ${round} cannot train: its context has no sum`);
    }
    this.#ctx = ctx;
    this.round = round;
    this.kind = kind;
    this.task = taskNumber(round, kind);
    this.#late = late;
    this.#sum = kind === "train" ? ctx.sum : undefined;
    this.#sum?.reset();
  }

  /**
   * Runs the round to its end.
   *
   * @returns Its record and sum.
   * @throws {TypeError} If the model cannot be encoded (nothing is sent then).
   */
  async run(): Promise<RoundOutcome> {
    const { server, settings } = this.#ctx;
    const started = performance.now(), time = new Date().toISOString();
    const bytesIn = server.bytesReceived, bytesOut = server.bytesSent;
    this.#timers.push(setTimeout(() => this.#close("deadline"), settings.roundTimeout));
    try {
      const ids = this.#sample();
      if (ids.length > 0) await this.#exchange(ids);
      await this.#settleRest();
    } finally {
      for (const timer of this.#timers) clearTimeout(timer);
    }
    const record: RoundRecord = {
      job: settings.job,
      round: this.round,
      kind: this.kind,
      task: this.task,
      time,
      sampled: this.#sampled,
      answered: [...this.#answered].sort(),
      late: this.#late,
      missing: this.#missing,
      failed: this.#failed,
      quorum: this.#quorum(),
      bytesIn: server.bytesReceived - bytesIn,
      bytesOut: server.bytesSent - bytesOut,
      ms: Math.round(performance.now() - started),
      metrics: aggregateMetrics(this.#metrics),
    };
    return { record, sum: record.quorum ? this.#sum : undefined };
  }

  /**
   * The operator removed a site: if this round awaits it, it is sent a
   * `cancel` ("removed") and is missing.
   *
   * @param name The site's name.
   */
  remove(name: string): void {
    const id = this.#idOf(name);
    if (id === undefined) return;
    // Not waited for: it may still be receiving its task (the model stays lent).
    this.#sending.abort(new FedcommError(`Round ${this.round}: site "${name}" removed`));
    this.#settle(id, "removed by the operator");
    this.#cancel([id], "removed");
  }

  /**
   * A session left for good: if this round awaits it, the site is missing.
   *
   * @param id The session's id.
   * @param error Why it left.
   */
  left(id: number, error: Error | undefined): void {
    if (!this.#awaited.has(id)) return;
    this.#settle(id, `left: ${error?.message ?? "its session ended"}`);
  }

  /**
   * A site's reply to an older task came during this round.
   *
   * @param name The site's name.
   */
  late(name: string): void {
    this.#late.push(name);
  }

  /**
   * Ends the round at once: the sites still awaited get a `cancel` ("stopped").
   *
   * @param reason Why, for their `missing` entries.
   */
  stop(reason: string): void {
    this.#stopReason = reason;
    this.#close("stopped");
  }

  /** Whether the round was ended by {@linkcode Round.stop}. */
  get stopped(): boolean {
    return this.#ending === "stopped";
  }

  /**
   * Whether the transport may still be sending the model's memory: the
   * tasks' broadcast did not resolve (it failed, or the round ended first),
   * so a site's copy may be unacknowledged (the model must not be written).
   */
  get lent(): boolean {
    return this.#lent;
  }

  /** Samples the sites and marks them busy; returns their ids. */
  #sample(): number[] {
    const { cohort, settings, totals } = this.#ctx;
    const per = this.kind === "train" ? settings.sitesPerRound : settings.sitesPerEvaluation;
    const k = per ?? Math.max(1, cohort.available);
    const seedRound = this.kind === "train" ? this.round : -this.round;
    const ids: number[] = [];
    for (const name of cohort.sample(k, { seed: settings.seed, round: seedRound })) {
      const id = cohort.idOf(name)!;
      this.#sampled.push(name);
      this.#awaited.set(id, name);
      cohort.assign(name, this.task);
      ids.push(id);
    }
    totals.add({ tasks: ids.length });
    return ids;
  }

  /**
   * Sends the tasks and takes the answers at the same time: the broadcast
   * numbers every site's task at once, then waits for the slowest site's
   * acknowledgement while the others' answers are folded.
   *
   * @throws {TypeError} If the model cannot be encoded (nothing was sent).
   */
  async #exchange(ids: number[]): Promise<void> {
    const sending = this.#dispatch(ids);
    if (this.#awaited.size === 0 || this.#ending !== undefined) return await sending;
    const collecting = this.#collect();
    // Its failure stops the broadcast's wait too; it is thrown below.
    collecting.catch((error) => this.#sending.abort(error));
    try {
      await sending;
    } catch (error) {
      this.#end.abort(error); // no task went out: no answer comes
      await collecting;
      throw error;
    }
    await collecting;
  }

  /** Sends the task to every sampled site, in one broadcast. */
  async #dispatch(ids: number[]): Promise<void> {
    const { server, settings, strategy, global } = this.#ctx;
    const message: TaskMessage = {
      fl: FL_VERSION,
      type: "task",
      job: settings.job,
      task: this.task,
      round: this.round,
      kind: this.kind,
      config: strategy.configure(this.round, this.kind),
      weights: global,
    };
    this.#lent = true;
    try {
      await server.broadcast(message, { ids, signal: this.#sending.signal });
      this.#lent = false; // every connected site acknowledged it; those away got a copy
    } catch (error) {
      if (this.#sending.signal.aborted) return;
      if (error instanceof TypeError) throw error;
      // Who did not get it: the sites gone (the others still did), the one the error
      // names, or every one when it names none (a fixed cohort not complete, say).
      const named = (error as FedcommError).clientId;
      const all = named === undefined && !(error instanceof PeerDisconnectedError);
      for (const id of ids) {
        if (!this.#awaited.has(id)) continue;
        if (!isMember(server, id)) this.#settle(id, `left before its task was sent`);
        else if (all || named === id) {
          this.#fail(id, `Its task could not be sent: ${(error as Error).message}`);
        }
      }
    }
  }

  /** Takes the answers as they arrive, until every site is settled or the round ends. */
  async #collect(): Promise<void> {
    const { server, settings } = this.#ctx;
    const uploads = server.uploads({
      ids: [...this.#awaited.keys()],
      min: 1,
      grace: settings.roundTimeout,
      signal: this.#end.signal,
    });
    try {
      for await (const { id, value } of uploads) {
        this.#take(id, value);
        server.recycle(value);
        if (this.#awaited.size === 0) break;
      }
    } catch (error) {
      // Aborted (the round ended), or every site still awaited left (they are settled below).
      if (!this.#end.signal.aborted && !(error instanceof FedcommError)) throw error;
    }
  }

  /** One site's answer: a result folded in, or a per-site error. */
  #take(id: number, value: unknown): void {
    const name = this.#awaited.get(id);
    if (name === undefined) return;
    let message;
    try {
      message = parseSiteMessage(value, this.kind);
    } catch (error) {
      return this.#fail(id, (error as Error).message);
    }
    if (message.task !== this.task || message.round !== this.round) {
      if (message.task < this.task) {
        this.#ctx.totals.add({ late: 1 });
        this.#ctx.cohort.late(name);
        this.#late.push(name);
        return this.#settle(id, `sent a result for older task "${message.task}" instead`);
      }
      return this.#fail(
        id,
        `Answer is for task "${message.task}" of round "${message.round}", ` +
          `not task "${this.task}" of round "${this.round}"`,
      );
    }
    if (message.type === "failure") return this.#fail(id, message.error);
    try {
      if (this.#sum !== undefined) this.#sum.add(message.weights!, message.samples);
    } catch (error) {
      return this.#fail(id, (error as Error).message);
    }
    this.#awaited.delete(id);
    this.#answered.push(name);
    this.#metrics.push({ samples: message.samples, metrics: message.metrics });
    this.#ctx.totals.add({ results: 1 });
    this.#ctx.cohort.answered(name, this.kind === "train" ? this.round : undefined);
    this.#quorumCheck();
  }

  /** Starts the grace once the quorum is reached. */
  #quorumCheck(): void {
    const grace = this.#ctx.settings.grace;
    if (grace === undefined || this.#answered.length !== this.#ctx.settings.minResults) return;
    if (this.#awaited.size > 0) this.#timers.push(setTimeout(() => this.#close("grace"), grace));
  }

  #quorum(): boolean {
    if (this.#answered.length < this.#ctx.settings.minResults) return false;
    return this.#sum === undefined || this.#sum.weight > 0;
  }

  #fail(id: number, error: string): void {
    const name = this.#awaited.get(id)!;
    this.#awaited.delete(id);
    this.#failed.push({ site: name, error });
    this.#ctx.totals.add({ failures: 1 });
    this.#ctx.cohort.failed(name);
    if (this.#awaited.size === 0) this.#close("all");
  }

  #settle(id: number, reason: string): void {
    const name = this.#awaited.get(id)!;
    this.#awaited.delete(id);
    this.#missing.push({ site: name, reason });
    this.#ctx.totals.add({ missing: 1 });
    this.#ctx.cohort.missed(name, 0);
    if (this.#awaited.size === 0) this.#close("all");
  }

  /**
   * Ends the round. The broadcast goes on after an ending with every site
   * settled ("all": they acknowledged it, or will at once), so that the
   * model is not held as lent; the deadline still stops it.
   */
  #close(ending: Ending): void {
    const reason = new FedcommError(`Round ${this.round} ended: ${ending}`);
    if (ending !== "all") this.#sending.abort(reason);
    if (this.#ending !== undefined) return;
    this.#ending = ending;
    this.#end.abort(reason);
  }

  /** The sites still awaited at the end: missing, cancelled, and their queued answers dropped. */
  async #settleRest(): Promise<void> {
    const { cohort, settings, server } = this.#ctx;
    const reason = this.#ending === "stopped"
      ? `the job stopped: ${this.#stopReason}`
      : this.#ending === "grace"
      ? `no answer within the grace of ${settings.grace} ms after the quorum`
      : `no answer within the round's ${settings.roundTimeout} ms`;
    const ids = [...this.#awaited.keys()].filter((id) => isMember(server, id));
    for (const [id, name] of [...this.#awaited]) {
      const away = isMember(server, id) && server.stats(id).state === "resuming";
      this.#settle(id, away ? `${reason} (disconnected, not resumed)` : reason);
      if (this.#ending !== "stopped") cohort.missed(name, settings.staleHold);
    }
    await this.#cancel(ids, this.#ending === "stopped" ? "stopped" : "stale");
  }

  /** Sends `cancel` to the sites, then drops their answers queued before it (as late). */
  async #cancel(ids: number[], reason: CancelReason): Promise<void> {
    if (ids.length === 0) return;
    const { server } = this.#ctx;
    const cancel: CancelMessage = {
      fl: FL_VERSION,
      type: "cancel",
      task: this.task,
      round: this.round,
      reason,
    };
    await Promise.allSettled(ids.map((id) => server.send({ [id]: cancel }, { timeout: 10_000 })));
    const members = ids.filter((id) => isMember(server, id));
    if (members.length === 0) return;
    try {
      const { received } = await server.gatherSettled({ ids: members, timeout: 0 });
      for (const value of received.values()) server.recycle(value);
    } catch {
      // Another call is receiving from one of them (the round's own uploads, ending): it drops them.
    }
  }

  #idOf(name: string): number | undefined {
    for (const [id, awaited] of this.#awaited) if (awaited === name) return id;
    return undefined;
  }
}

/** Whether `id` is a member of the server that is not gone. */
function isMember(server: Server, id: number): boolean {
  try {
    return server.stats(id).state !== "gone";
  } catch {
    return false;
  }
}
