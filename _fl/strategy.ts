/**
 * Strategies: what the coordinator tells the sites each round
 * (`configure`) and how it turns the round's weighted sum of updates into the
 * next global model (`update`). FedAvg and FedProx take the sample-weighted
 * mean (`fed_avg.ts`); FedAdam and FedYogi run an adaptive optimizer on the
 * server, on the pseudo-gradient Δ = mean − global (`fed_opt.ts`; Reddi et
 * al. 2021, "Adaptive Federated Optimization").
 *
 * @module
 */

export {
  type ConfigSource,
  FedAvg,
  type FedAvgOptions,
  FedProx,
  type FedProxOptions,
  type Strategy,
} from "./fed_avg.ts";
export { FedAdam, FedOpt, type FedOptOptions, FedYogi } from "./fed_opt.ts";
