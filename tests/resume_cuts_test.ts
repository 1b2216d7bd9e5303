/**
 * Cut-point enumeration for resume (issue 14): for every place the fault
 * proxy can cut a connection (inside a frame header, inside a frame body,
 * between two frames, inside the handshake of the resume) and each
 * direction, over authentication, a Deno client and a Python client each
 * exchange a fixed script of messages with a Deno server while the link is
 * cut once, and every message must arrive exactly once, in order, intact,
 * with the session resumed under the same id.
 *
 * The script (numbers are per direction, `dN` server → client, `uN` client →
 * server; each `d` message tells the client what to send after it):
 *
 * ```
 * d1 small                       → u1 small
 * d2 small broadcast ("round 1") → u2 reply to d2
 *        (quiet: every message acknowledged; a `down` cut is armed here)
 * d3 2 MiB broadcast             → 300 ms pause, u3 2 MiB, u4 small
 *        (an `up` cut is armed once d3 is acknowledged, in the pause)
 *        ... the cut: in d3 (down) or in u3 (up) ...
 * d4 small broadcast ("round 2") → u5 reply to d4 (taken before d5 is sent: no late reply)
 * d5 2 MiB send                  → u6 small
 * d6 small, the end
 * ```
 *
 * Each cut is armed while its direction is quiet, so it lands on the frame
 * it aims at: a `header` cut inside the header of d3 or u3, a `body` cut
 * inside its body, a `boundary` cut right after it (delivered whole, its
 * acknowledgement lost: the resume must not send it again). A `handshake`
 * case cuts d3's or u3's body, and then the resume's own handshake in the
 * same direction (the resume's hello up, its challenge down); the client
 * must try again and resume on a third connection.
 *
 * What `bench/_fault_proxy.ts` cannot aim at with authentication on: the
 * `auth` frame and the `welcome` of a resume (its `handshake` cut lands in
 * the first frame of the direction only). Those two cut points are covered
 * here by {@linkcode HandshakeCutter} (`handshake_cutter.ts`), a small proxy
 * that cuts a given handshake frame of a given connection.
 *
 * The script and its clients are in `resume_script.ts`.
 *
 * Needs `/usr/bin/python3` with `msgpack` and `numpy` for the Python cases
 * (skipped without them). `RESUME_CUTS_VERBOSE=1` prints where each cut landed.
 */

import assert from "node:assert/strict";
import { type CutKind, type Direction, type Fault, FaultProxy } from "../bench/_fault_proxy.ts";
import { PeerDisconnectedError } from "../errors.ts";
import type { TransferEvent } from "../events.ts";
import { listen } from "../server.ts";
import { HandshakeCutter } from "./handshake_cutter.ts";
import {
  checkUps,
  collect,
  down,
  MESSAGES,
  pattern,
  SECRET,
  startClient,
  watch,
} from "./resume_script.ts";
import { delay, pythonReady } from "./test_util.ts";

const VERBOSE = (() => {
  try {
    return Deno.env.get("RESUME_CUTS_VERBOSE") === "1";
  } catch {
    return false;
  }
})();
const noPython = !pythonReady("msgpack", "numpy");

/** Rejects after `ms` with an error naming `what`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 5 ms for at most `ms`. */
async function waitFor(
  condition: () => boolean,
  what: string,
  ms = 10_000,
  signal?: AbortSignal,
): Promise<void> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (signal?.aborted) throw new Error(`Stopped waiting for ${what}`);
    if (performance.now() > end) throw new Error(`Gave up after ${ms} ms waiting for ${what}`);
    await delay(5);
  }
}

// --- one case -----------------------------------------------------------------

/** Where the case cuts: a fault proxy kind, or a handshake frame of the resume. */
type CaseKind =
  | Exclude<CutKind, "random">
  | `${HandshakeFrame} ${"header" | "body"}`
  | "delivered";

/** The frames of a resume's handshake, with authentication, and their index in their direction. */
const HANDSHAKE_FRAMES = { hello: 0, auth: 1, challenge: 0, welcome: 1 } as const;
type HandshakeFrame = keyof typeof HANDSHAKE_FRAMES;

/** Runs the script over a cut of `kind` in `direction`, with a client in `lang`. */
async function runCase(
  kind: CaseKind,
  direction: Direction,
  lang: "deno" | "python",
  seed: number,
): Promise<void> {
  await using server = listen({
    hostname: "127.0.0.1",
    port: 0,
    clients: 1,
    auth: { secret: SECRET },
    resumeTimeout: 30_000,
  });
  const log = watch(server);
  const [frameName, at] = kind.split(" ") as [HandshakeFrame, "header" | "body" | undefined];
  const delivered = kind === "delivered";
  const custom = at !== undefined || delivered;
  // auth: the resume's 2nd frame up (hello, auth); welcome: its 2nd down (challenge, welcome).
  await using cutter = custom
    ? new HandshakeCutter(server.port, {
      connection: delivered ? -1 : 1,
      direction,
      frame: HANDSHAKE_FRAMES[frameName],
      header: at === "header" ? 1 + (seed % 3) : 4,
    })
    : undefined;
  if (delivered) cutter!.deliver = direction;
  await using proxy = custom ? undefined : new FaultProxy({ targetPort: server.port, seed });
  const client = startClient(lang, (cutter ?? proxy)!.port);
  const stop = new AbortController();
  /** Waits for `promise`, failing at once (with the client's error) if the client ends first. */
  const alive = <T>(promise: Promise<T>): Promise<T> =>
    Promise.race([
      promise,
      client.done.then(() => {
        throw new Error("the client ended its script early");
      }),
    ]);
  try {
    await within(
      Promise.race([server.ready({ timeout: 20_000 }), client.done]),
      20_000,
      "the client to join",
    );
    await server.ready({ timeout: 1 });
    if (proxy !== undefined) {
      await waitFor(() => proxy.live()[0]?.handshaking === false, "the welcome to be forwarded");
    }
    const collecting = collect(server, log);
    collecting.catch(() => {});

    // Phase A, then quiet.
    await server.send({ 0: down(1, [{ send: 1 }]) });
    await server.broadcast(down(2, [{ reply: 2 }]));
    await alive(waitFor(
      () => server.stats()[0].messagesReceived >= 2 && server.stats()[0].unacknowledged === 0,
      "u1, u2 and the acks of d1, d2",
      10_000,
      stop.signal,
    ));
    await delay(60); // the acks of u1 and u2 go out within 10 ms

    // Phase B: d3, and the cut in d3 (down) or u3 (up).
    const d3 = down(3, [{ sleep: 300 }, { send: 3, big: true }, { send: 4 }], {
      big: pattern(1003),
    });
    let cut: Promise<unknown>;
    const arm = (): Promise<unknown> => {
      if (delivered) return cutter!.delivered.promise;
      if (proxy === undefined) {
        // The session's connection is dropped in the middle of d3 or u3 (as the
        // proxy's body cut would), the resume's handshake frame is cut by the cutter.
        // (The drop lands wherever the bytes are when the server reports d3 or u3 moving.)
        const dropping = new Promise<void>((resolve) => {
          const wanted = direction === "down" ? "send" : "receive";
          let dropped = false;
          server.addEventListener("progress", (e: TransferEvent) => {
            if (dropped || e.direction !== wanted || e.total < 1024 * 1024) return;
            dropped = true;
            cutter!.drop(0);
            resolve();
          });
        });
        return Promise.all([dropping, cutter!.cut.promise]).then(([, frame]) => frame);
      }
      if (kind === "handshake") {
        const inHandshake = proxy.cut({ kind: "handshake", direction });
        const session = proxy.cut({
          kind: "body",
          direction,
          connection: 0,
          minBodyBytes: 1024 * 1024,
        });
        return Promise.all([session, inHandshake]);
      }
      return proxy.cut({
        kind: kind as CutKind,
        direction,
        connection: 0,
        minBodyBytes: kind === "body" ? 1024 * 1024 : undefined,
      });
    };
    if (direction === "down") {
      cut = arm();
      const sending = server.broadcast(d3, { timeout: 30_000 });
      sending.catch(() => {});
      await alive(within(cut, 20_000, "the cut"));
      await alive(sending);
    } else {
      await alive(server.broadcast(d3, { timeout: 30_000 })); // acknowledged: up is quiet
      cut = arm();
      await alive(within(cut, 20_000, "the cut"));
    }
    const fault = await cut;

    // Phase C: more each way, sent while the session may still be resuming.
    await alive(server.broadcast(down(4, [{ reply: 5 }]), { timeout: 30_000 }));
    // u5 must be taken as the answer to d4 (not late): nothing more is sent before it is.
    await alive(waitFor(() => log.ups.length >= 5, "u5, the reply to d4", 30_000, stop.signal));
    await server.send({ 0: down(5, [{ send: 6 }], { big: pattern(1005) }) }, { timeout: 30_000 });
    await server.send({ 0: down(6, [], { end: true }) }, { timeout: 30_000 });

    const summary = await within(client.done, 40_000, "the client to finish its script");
    await within(collecting, 10_000, "the server to take the client's messages");

    // Where the cut landed.
    if (VERBOSE) {
      console.log(`${kind} ${direction} (${lang}):`, JSON.stringify(proxy?.faults ?? fault));
    }
    if (proxy !== undefined) {
      const faults = proxy.faults.map((f: Fault) => `${f.kind} ${f.direction}`);
      const session = kind === "handshake" ? "body" : kind;
      assert.deepStrictEqual(
        faults,
        kind === "handshake"
          ? [`cut-${session} ${direction}`, `cut-handshake ${direction}`]
          : [`cut-${session} ${direction}`],
        "the cuts landed where aimed",
      );
    } else if (!delivered) {
      const frame = fault as Record<string, unknown>;
      assert.equal(frame.type, frameName, `the cutter cut the resume's ${frameName}`);
    }

    // Exactly once, both ways.
    assert.deepStrictEqual(summary.received, [1, 2, 3, 4, 5, 6], "the client's messages");
    assert.equal(summary.messagesReceived, MESSAGES, "the client received nothing twice");
    assert.equal(summary.messagesSent, MESSAGES);
    checkUps(log);
    const [stats] = server.stats();
    assert.equal(server.stats().length, 1, "one session: no new client");
    assert.equal(summary.id, 0);
    assert.equal(stats.id, 0);
    assert.equal(stats.messagesReceived, MESSAGES, "the server received nothing twice");
    assert.equal(stats.messagesSent, MESSAGES);
    // A cut welcome: the server had resumed the session on that connection (the
    // client never knew), then saw it drop, then resumed it again.
    const serverResumes = frameName === "welcome" ? 2 : 1;
    assert.equal(stats.resumes, serverResumes, "the server's resumes");
    assert.equal(summary.resumes, 1, "the client resumed once");
    assert.deepStrictEqual(
      log.resumedIds,
      Array(serverResumes).fill(0),
      "the resume events name the same id",
    );
    // The client closed its session: nothing more comes, no duplicate waits in the inbox.
    const after = await server.gather({ timeout: 5_000 }).then((v) => v, (e) => e);
    assert.ok(after instanceof PeerDisconnectedError, `nothing after the end: ${String(after)}`);
    assert.deepStrictEqual(log.events, [
      "join",
      ...Array(serverResumes).fill(["disconnect", "resume"]).flat(),
      "leave",
    ]);
  } finally {
    stop.abort();
    await delay(10); // the polls of waitFor() see it and end
    await client.kill();
    await client.done.catch(() => {});
  }
}

// --- the matrix ---------------------------------------------------------------

const KINDS: CaseKind[] = ["header", "body", "boundary", "handshake", "delivered"];
const CUSTOM: [CaseKind, Direction][] = (["header", "body"] as const).flatMap((at) => [
  [`hello ${at}`, "up"],
  [`auth ${at}`, "up"],
  [`challenge ${at}`, "down"],
  [`welcome ${at}`, "down"],
]);
const CASES: [CaseKind, Direction][] = [
  ...KINDS.flatMap((kind) =>
    (["down", "up"] as const).map((d): [CaseKind, Direction] => [kind, d])
  ),
  ...CUSTOM,
];

let seed = 101;
for (const lang of ["deno", "python"] as const) {
  for (const [kind, direction] of CASES) {
    const caseSeed = seed++;
    const where = kind === "delivered"
      ? "boundary, its ack lost,"
      : kind.includes(" ")
      ? `the resume's ${kind}`
      : kind;
    Deno.test({
      name:
        `resume() delivers exactly once when the link is cut in ${where} ${direction} (${lang})`,
      ignore: lang === "python" && noPython,
      sanitizeOps: true,
      sanitizeResources: true,
      fn: () => runCase(kind, direction, lang, caseSeed),
    });
  }
}
