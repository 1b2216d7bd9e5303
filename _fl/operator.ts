/**
 * The operator view: a small web page, served by the coordinator process on
 * a loopback address, that shows the job live (its rounds and its sites, a
 * round-time and a metric plot) and lets the operator remove a site and stop
 * the job. Off by default: nothing listens until {@linkcode serveOperator} is
 * called.
 *
 * Routes: `GET /` (the page), `GET /operator.js`, `GET /operator.css`,
 * `GET /api/snapshot` (the source's snapshot as JSON), `GET /api/events`
 * (Server-Sent Events: a `snapshot`, then each `round` and `site` event of the
 * source), `POST /api/sites/<name>/remove` and `POST /api/stop`.
 *
 * Protection: the server listens on loopback only; every request must name a
 * loopback host in its `Host` header (which defeats DNS rebinding); the POSTs
 * must carry the per-process token of the page in an `x-fedcomm-token` header
 * (a cross-site page can neither read the token nor send that header without
 * a CORS preflight, which is never granted) and, when they have an `Origin`,
 * come from the page's own origin.
 *
 * @module
 */

import type { JobSnapshot } from "./job.ts";
import { EventStreams, format } from "./operator_stream.ts";
import { PAGE_CSS, pageHtml } from "./operator_page.ts";
import { PAGE_SCRIPT } from "./operator_script.ts";

/**
 * What the operator view shows and acts on: the Coordinator is one. Its
 * `round` and `site` events are `CustomEvent`s whose `detail` is plain JSON
 * (a round record, a site's snapshot).
 */
export interface OperatorSource extends EventTarget {
  /** The job's state as plain JSON: job, round, state, sites, recent rounds, totals. */
  snapshot(): JobSnapshot;
  /** Removes a site from the job (its task is cancelled, it gets no more). */
  removeSite(name: string): void;
  /** Stops the job cleanly. */
  stop(reason?: string): void;
}

/** Options of {@linkcode serveOperator}. */
export interface OperatorOptions {
  /** A loopback address to listen on: `"127.0.0.1"` (default), `"::1"` or `"localhost"`. */
  hostname?: string;
  /** The TCP port (default 0: a free port; read it from `url`). */
  port?: number;
  /** Closes the server when aborted. */
  signal?: AbortSignal;
  /** How many pages may follow the live feed at once (default 16). */
  maxStreams?: number;
}

/** The running operator view. */
export interface OperatorServer extends AsyncDisposable {
  /** The page's address, e.g. `http://127.0.0.1:8080/`. */
  readonly url: string;
  /** The TCP port it listens on. */
  readonly port: number;
  /** Stops listening, ends the live feeds and detaches from the source. */
  close(): Promise<void>;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "[::1]", "localhost"]);
const TOKEN_HEADER = "x-fedcomm-token";

const SECURITY_HEADERS: Record<string, string> = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; " +
    "frame-ancestors 'none'",
};

/** What the request handler needs. */
interface Context {
  readonly source: OperatorSource;
  readonly token: string;
  readonly streams: EventStreams;
}

function checkOptions(source: OperatorSource, options: OperatorOptions): void {
  for (const method of ["snapshot", "removeSite", "stop", "addEventListener"] as const) {
    if (typeof (source as unknown as Record<string, unknown>)?.[method] !== "function") {
      throw new TypeError(`Invalid source: it has no "${method}" method`);
    }
  }
  const hostname = options.hostname ?? "127.0.0.1";
  if (!LOOPBACK.has(hostname)) {
    throw new RangeError(
      `Invalid hostname: "${hostname}" is not a loopback address (127.0.0.1, ::1 or localhost); ` +
        "the operator view is for this machine: reach it from elsewhere through an SSH tunnel",
    );
  }
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new RangeError(`Invalid port: "${port}" is not an integer from 0 to 65535`);
  }
  const max = options.maxStreams ?? 16;
  if (!Number.isInteger(max) || max < 1) {
    throw new RangeError(`Invalid maxStreams: "${max}" is not a positive integer`);
  }
}

/** A JSON answer with the security headers. */
function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "application/json; charset=utf-8" },
  });
}

function text(body: string, type: string): Response {
  return new Response(body, { headers: { ...SECURITY_HEADERS, "content-type": type } });
}

/** The host name of a `Host` header (`127.0.0.1:8080` → `127.0.0.1`, `[::1]:80` → `[::1]`). */
function hostOf(host: string): string {
  const bracket = host.startsWith("[") ? host.indexOf("]") + 1 : 0;
  const colon = host.indexOf(":", bracket);
  return (colon < 0 ? host : host.slice(0, colon)).toLowerCase();
}

/** Why a POST is refused, or `undefined` when it is the page's own. */
function refusal(request: Request, token: string): string | undefined {
  if (request.headers.get(TOKEN_HEADER) !== token) {
    return `Forbidden: missing or wrong "${TOKEN_HEADER}" header (send it from the operator page)`;
  }
  const origin = request.headers.get("origin");
  if (origin !== null && origin !== new URL(request.url).origin) {
    return `Forbidden: cross-origin request from "${origin}"`;
  }
  return undefined;
}

/** Runs an operator action, answering its error as a 400 with its message. */
function act(action: () => void, done: Record<string, unknown>): Response {
  try {
    action();
    return json({ ok: true, ...done });
  } catch (error) {
    return json({ error: error instanceof Error ? error.message : String(error) }, 400);
  }
}

function post(path: string, request: Request, context: Context): Response {
  const why = refusal(request, context.token);
  if (why !== undefined) return json({ error: why }, 403);
  if (path === "/api/stop") return act(() => context.source.stop("operator"), { stopped: true });
  const match = /^\/api\/sites\/([^/]+)\/remove$/.exec(path);
  if (match === null) return json({ error: `Not found: "${path}"` }, 404);
  let name: string;
  try {
    name = decodeURIComponent(match[1]);
  } catch {
    return json({ error: `Invalid site name in the path: "${match[1]}"` }, 400);
  }
  return act(() => context.source.removeSite(name), { removed: name });
}

function get(path: string, context: Context): Response {
  switch (path) {
    case "/":
      return text(pageHtml(context.token), "text/html; charset=utf-8");
    case "/operator.js":
      return text(PAGE_SCRIPT, "text/javascript; charset=utf-8");
    case "/operator.css":
      return text(PAGE_CSS, "text/css; charset=utf-8");
    case "/api/snapshot":
      return json(context.source.snapshot());
    case "/api/events":
      return context.streams.open(format("snapshot", context.source.snapshot()));
    case "/favicon.ico":
      return new Response(null, { status: 204, headers: SECURITY_HEADERS });
    default:
      return json({ error: `Not found: "${path}"` }, 404);
  }
}

function handle(request: Request, context: Context): Response {
  const host = request.headers.get("host");
  if (host === null || !LOOPBACK_HOSTS.has(hostOf(host))) {
    return json({ error: `Forbidden: host "${host}" is not a loopback name` }, 403);
  }
  const path = new URL(request.url).pathname;
  try {
    if (request.method === "GET" || request.method === "HEAD") return get(path, context);
    if (request.method === "POST") return post(path, request, context);
    return json({ error: `Method not allowed: "${request.method}"` }, 405);
  } catch (error) {
    return json({ error: error instanceof Error ? error.message : String(error) }, 500);
  }
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Serves the operator view of `source` on a loopback address. It forwards the
 * source's `round` and `site` events to the open pages, and turns the page's
 * buttons into `source.removeSite(name)` and `source.stop("operator")`.
 *
 * @param source What to show and act on (a Coordinator).
 * @param options The address (loopback only), a signal that closes it, the live-feed cap.
 * @returns The running server: its `url`, `close()`, and `await using` support.
 * @throws {TypeError} If `source` lacks a method of {@linkcode OperatorSource}.
 * @throws {RangeError} If `hostname` is not a loopback address, or `port` or `maxStreams` is invalid.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listen } from "@fedcomm/fedcomm";
 * import { Coordinator, serveOperator } from "@fedcomm/fedcomm/fl";
 *
 * await using server = listen({ clients: 8, open: true });
 * const coordinator = new Coordinator(server, {
 *   job: "demo", model: { b: new Float32Array(2) }, rounds: 3,
 * });
 * await using operator = serveOperator(coordinator, { port: 0 }); // nothing listens without it
 * const snapshot = await (await fetch(new URL("api/snapshot", operator.url))).json();
 * assert.equal(snapshot.job, "demo");
 * const forged = await fetch(new URL("api/stop", operator.url), { method: "POST" });
 * assert.equal(forged.status, 403); // no token: not the operator page
 * await forged.body?.cancel();
 * ```
 */
export function serveOperator(
  source: OperatorSource,
  options: OperatorOptions = {},
): OperatorServer {
  checkOptions(source, options);
  options.signal?.throwIfAborted();
  const context: Context = {
    source,
    token: randomToken(),
    streams: new EventStreams(options.maxStreams ?? 16),
  };
  const forward = (event: Event): void => {
    context.streams.send(format(event.type, (event as CustomEvent).detail ?? null));
  };
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    onListen: () => {},
    onError: (error) =>
      json({ error: error instanceof Error ? error.message : String(error) }, 500),
  }, (request) => handle(request, context));
  source.addEventListener("round", forward);
  source.addEventListener("site", forward);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      options.signal?.removeEventListener("abort", onAbort);
      source.removeEventListener("round", forward);
      source.removeEventListener("site", forward);
      context.streams.close();
      await server.shutdown();
    })();
    return closing;
  };
  const onAbort = (): void => void close();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const { hostname, port } = server.addr;
  const url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}/`;
  return { url, port, close, [Symbol.asyncDispose]: close };
}
