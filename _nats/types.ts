/**
 * The public option and result types of `nats.ts`, in one place.
 *
 * @module
 */

import type { ListenOptions, Secret, WaitOptions } from "../types.ts";
import type { Config, TaskKind } from "../_fl/messages.ts";
import type { Weights } from "../_fl/weights.ts";

/**
 * TLS to NATS: the CA to trust, and a client certificate where NATS verifies
 * clients. Give the certificate to such a server: without one, the TLS 1.3
 * handshake completes and the server then drops the connection, which fails
 * only at `timeout` (the client sees no answer), or, if the server's alert
 * comes in the moment `@nats-io/transport-node` 3.4 has no error listener on
 * its TLS socket, as an uncaught error.
 */
export interface NatsTlsOptions {
  /** PEM CA certificates to trust (for a private CA). */
  caCerts?: string[];
  /** A PEM client certificate, for a NATS server that verifies clients (`--tlsverify`). */
  cert?: string;
  /** Its PEM private key. */
  key?: string;
}

/** Where NATS is and how to log in: at most one of user/pass, token, nkey seed or creds. */
export interface NatsConnectOptions {
  /** The NATS servers, `host:port` (or `nats://` / `tls://` URLs): one, or a cluster's. */
  servers: string | string[];
  /** A user name, with `pass`. */
  user?: string;
  /** The user's password. */
  pass?: string;
  /** A token (`nats-server --auth TOKEN`). */
  token?: string;
  /** An nkey seed (`SU…`): the user proves it holds the key by signing the server's nonce. */
  nkeySeed?: string;
  /** The text of a `.creds` file (a user JWT and its nkey seed), for operator-mode NATS. */
  creds?: string;
  /** Connect over TLS. */
  tls?: NatsTlsOptions;
  /** The connection's name in NATS monitoring (default `fedcomm root J` / `fedcomm edge E`). */
  name?: string;
  /** Milliseconds for the first connection (default 10,000); a restarted server is waited for. */
  timeout?: number;
}

/** What the root and the edges of one job share. */
export interface JobOptions {
  /** The NATS connection. */
  nats: NatsConnectOptions;
  /** The job's name: 1-64 letters, digits, `_` or `-`; names its stream, subjects and bucket. */
  job: string;
  /**
   * Bytes per object-store chunk (default 256 KiB; at most the server's
   * `max_payload`, 1 MiB by default). A model is any number of chunks, so
   * models over 4 GiB go through.
   */
  chunkBytes?: number;
  /** Milliseconds NATS keeps the job's messages and objects (default 24 h). */
  retention?: number;
  /** The largest model or partial aggregate taken from the object store (default 16 GiB). */
  maxModelBytes?: number;
}

/** Options of {@linkcode root}. */
export interface RootOptions extends JobOptions {
  /**
   * The edges the root accepts partial aggregates from, by name, each with
   * its secret (at least 16 bytes; `openssl rand -hex 32`): every message
   * between the root and an edge carries an HMAC-SHA-256 made with it.
   */
  edges: Readonly<Record<string, Secret>> | ReadonlyMap<string, Secret>;
}

/** Options of {@linkcode edge}. */
export interface EdgeOptions extends JobOptions {
  /** This edge's name, as in the root's `edges`. */
  name: string;
  /** This edge's secret, as in the root's `edges`. */
  secret: Secret;
  /**
   * The fedcomm server the sites connect to (default: `open` membership, so
   * sites may come and go between rounds, and `clients` 10,000).
   */
  listen?: Partial<ListenOptions>;
  /**
   * The local quorum: once this many sites answered, the edge waits `grace`
   * ms more and sends its partial aggregate (default 1 with `grace` up to
   * the edge's deadline: wait for every site until then).
   */
  min?: number;
  /** Milliseconds to wait after the local quorum (default: until the edge's deadline). */
  grace?: number;
}

/** Options of {@linkcode NatsRoot.round}: one round's task, quorum and deadline. */
export interface RoundOptions extends WaitOptions {
  /** The round's number: increasing within the job (a positive integer). */
  round: number;
  /** The task's number (default: the round's). */
  task?: number;
  /** Train (answers carry weights; default) or evaluate (metrics only). */
  kind?: TaskKind;
  /** The sites' settings for the round. */
  config?: Config;
  /** The global model. */
  weights: Weights;
  /**
   * The quorum at the root, in sites: once the partial aggregates received
   * hold this many site answers, the root waits `grace` ms more for the
   * other edges and ends the round (default: wait for every edge until the
   * deadline).
   */
  min?: number;
  /** Milliseconds to wait for the other edges after the quorum (default 0). */
  grace?: number;
  /** Milliseconds for the whole round at the root (default 600,000). */
  timeout?: number;
  /**
   * Milliseconds each edge has for its local round, from when it takes the
   * task (default 80% of `timeout`): the rest is for the partial's way up.
   */
  edgeTimeout?: number;
}

/** A message that came up from an edge and was refused. */
export interface Rejection {
  /** The edge it claims to come from (the subject's last token). */
  readonly edge: string;
  /** Why it was refused: `Message from "x" is not from a known edge`, a bad HMAC, a replay. */
  readonly reason: string;
}

/** What {@linkcode NatsRoot.round} returns. */
export interface RoundResult {
  /** The round. */
  readonly round: number;
  /** The task. */
  readonly task: number;
  /** The FedAvg aggregate (sample-weighted mean), for a train round with a total weight above 0. */
  readonly weights: Weights | undefined;
  /** The sample-weighted mean of the sites' metrics. */
  readonly metrics: Record<string, number>;
  /** The total weight (samples) of the answers aggregated. */
  readonly weight: number;
  /** The sites that answered, `edge/site`, each with its sample count. */
  readonly sites: Map<string, number>;
  /**
   * The sites that gave no answer, `edge/site`, with why: from their edge
   * (disconnected, no answer in time, a failure, a malformed result), or, for
   * an edge whose partial did not come, `Edge "e" sent no partial aggregate
   * …` for each site it had taken the round with (or `e/*` when it is not
   * known which).
   */
  readonly missing: Map<string, string>;
  /** The edges whose partial aggregates were aggregated. */
  readonly edges: string[];
  /**
   * The known edges whose partial did not come, with why (and, if a message
   * in an edge's name was refused, the first refusal: a forged or damaged
   * partial, or the edge's own with a wrong secret).
   */
  readonly missingEdges: Map<string, string>;
  /**
   * Messages refused: unknown edges, bad HMACs, replays, malformed partials;
   * at most 100, then one entry (edge `"*"`) counting the others.
   */
  readonly rejected: Rejection[];
  /** Whether the answers reached `min` sites (without `min`: every known edge sent its partial). */
  readonly quorum: boolean;
}

/** What an edge did so far ({@linkcode NatsEdge.stats}). */
export interface EdgeStats {
  /** Rounds it ran and sent a partial aggregate for. */
  readonly rounds: number;
  /** Models it fetched from the object store (one per distinct model, whatever the sites). */
  readonly modelsFetched: number;
  /** Bytes of models fetched. */
  readonly bytesFetched: number;
  /**
   * Tasks it skipped: stale (a newer one was queued, or past its deadline),
   * not authentic, or superseded mid-round by a newer one (the root had moved on).
   */
  readonly skipped: number;
  /** Milliseconds the last round took, from taking the task to its partial stored in NATS. */
  readonly lastRoundMs: number | undefined;
  /** Rounds whose partial could not be sent: NATS stayed unreachable past the round's deadline. */
  readonly failed: number;
}
