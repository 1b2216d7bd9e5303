/**
 * The strategy interface and the averaging strategies: FedAvg (the
 * sample-weighted mean of the round's updates) and FedProx (FedAvg whose
 * train tasks carry the proximal term's weight).
 *
 * @module
 */

import type { WeightedSum } from "./aggregate.ts";
import type { Config, TaskKind } from "./messages.ts";
import { checkSameTensors, describe, type Weights } from "./weights.ts";

/**
 * How a coordinator runs rounds: the settings it sends with each task and the
 * step from the round's updates to the next global model.
 */
export interface Strategy {
  /** The strategy's name, for records and checkpoints: `"FedAvg"`. */
  readonly name: string;
  /**
   * The `config` of the tasks of a round.
   *
   * @param round The round.
   * @param kind The tasks' kind.
   * @returns The settings to send.
   */
  configure(round: number, kind: TaskKind): Config;
  /**
   * The next global model.
   *
   * The coordinator's memory (see `Coordinator`): it passes the same `sum`
   * every round (emptied before the next), so a strategy copies what it
   * keeps of it; and, when no one else may read the current model's memory
   * any more (not the job's initial `model`, nor one a broadcast may still be
   * sending), it passes that model as `into`, so that a strategy that writes
   * the next model there needs no new memory. A strategy may ignore `into`
   * and return new weights.
   *
   * @param global The current global model (not changed, but through `into`).
   * @param sum The round's updates, weighted by sample count.
   * @param round The round.
   * @param into Memory to write the next model into and return, instead of
   * new weights: tensors of the global model's names, dtypes and shapes; the
   * coordinator passes `global` itself, so a strategy that reads `global`
   * reads each value before it writes the same index of `into`.
   * @returns New weights, or `into`, of the global model's names, dtypes and shapes.
   */
  update(global: Weights, sum: WeightedSum, round: number, into?: Weights): Weights;
  /**
   * The strategy's state, for a checkpoint (plain data and `Float64Array`s).
   *
   * @returns The state.
   */
  state(): Record<string, unknown>;
  /**
   * Puts back a state from {@linkcode Strategy.state}.
   *
   * @param state The state.
   */
  restore(state: Record<string, unknown>): void;
}

/** The settings every task of a round gets: fixed, or computed per round and kind. */
export type ConfigSource = Config | ((round: number, kind: TaskKind) => Config);

/** Options of {@linkcode FedAvg}. */
export interface FedAvgOptions {
  /** The sites' settings (epochs, learning rate, …): fixed, or per round and kind. */
  config?: ConfigSource;
}

function resolveConfig(source: ConfigSource | undefined, round: number, kind: TaskKind): Config {
  return { ...(typeof source === "function" ? source(round, kind) : source) };
}

/**
 * Checks that a sum was folded against the global model's tensors (names,
 * dtypes, shapes) and returns its accumulators.
 */
export function checkSum(global: Weights, sum: WeightedSum): Record<string, Float64Array> {
  checkSameTensors(describe(global), sum.model, "Sum");
  return sum.toPartial().sums;
}

/**
 * Federated averaging (McMahan et al. 2017): the next global model is the
 * mean of the round's updates weighted by each site's reported sample count.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedAvg, WeightedSum } from "@fedcomm/fedcomm/fl";
 *
 * const global = { b: new Float32Array([0, 0]) };
 * const strategy = new FedAvg({ config: (round) => ({ epochs: 1, lr: 0.1 / round }) });
 * assert.deepStrictEqual(strategy.configure(2, "train"), { epochs: 1, lr: 0.05 });
 * const sum = new WeightedSum(global);
 * sum.add({ b: new Float32Array([1, 1]) }, 100);
 * sum.add({ b: new Float32Array([3, 5]) }, 300);
 * assert.deepStrictEqual(strategy.update(global, sum, 2), { b: new Float32Array([2.5, 4]) });
 * ```
 */
export class FedAvg implements Strategy {
  /** `"FedAvg"`. */
  readonly name: string = "FedAvg";
  #config: ConfigSource | undefined;

  /**
   * Creates the strategy.
   *
   * @param options The sites' settings.
   */
  constructor(options: FedAvgOptions = {}) {
    this.#config = options.config;
  }

  /**
   * The tasks' settings: the `config` option's.
   *
   * @param round The round.
   * @param kind The tasks' kind.
   * @returns A fresh copy of the settings.
   */
  configure(round: number, kind: TaskKind): Config {
    return resolveConfig(this.#config, round, kind);
  }

  /**
   * The sample-weighted mean of the round's updates.
   *
   * @param global The current global model (checked against, not read).
   * @param sum The round's updates.
   * @param _round The round (unused).
   * @param into Memory to write the mean into (e.g. `global` itself), instead of new tensors.
   * @returns The mean, in the global model's dtypes and shapes: new tensors, or `into`.
   * @throws {TypeError} If the sum's tensors, or `into`'s, are not the global
   * model's (nothing is written then).
   * @throws {RangeError} If the sum's total weight is 0.
   */
  update(global: Weights, sum: WeightedSum, _round: number, into?: Weights): Weights {
    checkSum(global, sum);
    return sum.mean(into);
  }

  /**
   * FedAvg keeps no state.
   *
   * @returns `{ strategy: "FedAvg" }`.
   */
  state(): Record<string, unknown> {
    return { strategy: this.name };
  }

  /**
   * Checks that the state is a FedAvg one.
   *
   * @param state From {@linkcode FedAvg.state}.
   * @throws {TypeError} If it is another strategy's.
   */
  restore(state: Record<string, unknown>): void {
    checkStrategyName(state, this.name);
  }
}

export function checkStrategyName(state: Record<string, unknown>, name: string): void {
  if (state?.strategy !== name) {
    throw new TypeError(
      `Cannot restore ${name}: the state is ${JSON.stringify(state?.strategy ?? null)}'s`,
    );
  }
}

/** Options of {@linkcode FedProx}. */
export interface FedProxOptions extends FedAvgOptions {
  /** The proximal term's weight μ ≥ 0, sent to the sites as `proximal_mu`. */
  mu: number;
}

/**
 * FedProx (Li et al. 2020): FedAvg whose train tasks carry the proximal
 * term's weight μ as `config.proximal_mu`; each site adds (μ/2)·‖w − w_global‖²
 * to its local loss. The server side aggregates exactly like FedAvg.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedProx } from "@fedcomm/fedcomm/fl";
 *
 * const strategy = new FedProx({ mu: 0.01, config: { epochs: 2 } });
 * assert.deepStrictEqual(strategy.configure(1, "train"), { epochs: 2, proximal_mu: 0.01 });
 * assert.deepStrictEqual(strategy.configure(1, "evaluate"), { epochs: 2 });
 * assert.throws(() => new FedProx({ mu: -1 }), RangeError);
 * ```
 */
export class FedProx extends FedAvg {
  /** `"FedProx"`. */
  override readonly name: string = "FedProx";
  /** The proximal term's weight. */
  readonly mu: number;

  /**
   * Creates the strategy.
   *
   * @param options μ and the sites' other settings.
   * @throws {RangeError} If μ is not a finite non-negative number.
   */
  constructor(options: FedProxOptions) {
    super(options);
    checkNumber("FedProx", "mu", options?.mu, 0, Infinity, true);
    this.mu = options.mu;
  }

  /**
   * The tasks' settings, with `proximal_mu` for train tasks.
   *
   * @param round The round.
   * @param kind The tasks' kind.
   * @returns The settings.
   */
  override configure(round: number, kind: TaskKind): Config {
    const config = super.configure(round, kind);
    if (kind === "train") config.proximal_mu = this.mu;
    return config;
  }
}

/**
 * Checks a numeric option: finite, at least `min` (or above it when `closed`
 * is false) and below `max`.
 */
export function checkNumber(
  who: string,
  key: string,
  value: unknown,
  min: number,
  max: number,
  closed: boolean,
): void {
  const ok = typeof value === "number" && Number.isFinite(value) &&
    (closed ? value >= min : value > min) && value < max;
  if (!ok) {
    const low = closed ? `≥ ${min}` : `> ${min}`;
    const range = max === Infinity ? `a finite number ${low}` : `a number ${low} and < ${max}`;
    throw new RangeError(`Invalid ${who} option: "${key}" is "${value}", not ${range}`);
  }
}
