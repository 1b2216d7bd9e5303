/**
 * The script that `resume_cuts_test.ts` runs over a cut link (see there):
 * its messages, the clients that play it (in Deno, or in Python:
 * `python/tests/_resume_cuts_client.py`), and what the server saw of them.
 * Not published.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import type { ClientEvent, LateReplyEvent } from "../events.ts";
import type { Server } from "../server.ts";
import { delay, spawnPython } from "./test_util.ts";

/** The Python side of the script. */
const PYTHON_CLIENT = new URL("../python/tests/_resume_cuts_client.py", import.meta.url);
/** The secret of the server and its client. */
export const SECRET = "resume cuts: a shared secret of 32+ bytes";
/** Words of each large message: 2 MiB. */
export const WORDS = 512 * 1024;
/** Messages each way in the script. */
export const MESSAGES = 6;

// --- the messages -------------------------------------------------------------

/** What the client does after taking a message. */
export type Action = { sleep: number } | { send: number; big?: boolean } | { reply: number };

export interface Down {
  dir: "down";
  seq: number;
  text: string;
  then: Action[];
  big?: Uint32Array;
  end?: boolean;
}

export interface Up {
  dir: "up";
  seq: number;
  text: string;
  x: number;
  big?: Uint32Array;
  reply_to?: number;
}

/** `WORDS` words, word i being i + salt: a lost, repeated or shifted chunk shows. */
export function pattern(salt: number): Uint32Array {
  const words = new Uint32Array(WORDS);
  for (let i = 0; i < WORDS; i++) words[i] = i + salt;
  return words;
}

function assertPattern(value: unknown, salt: number, what: string): void {
  assert.ok(value instanceof Uint32Array, `${what}: a Uint32Array, not ${String(value)}`);
  assert.equal(value.length, WORDS, `${what}: length`);
  for (let i = 0; i < WORDS; i++) {
    if (value[i] !== ((i + salt) >>> 0)) assert.fail(`${what}: word ${i} is ${value[i]}`);
  }
}

export function down(seq: number, then: Action[], extra: Partial<Down> = {}): Down {
  return { dir: "down", seq, text: `d${seq}`, then, ...extra };
}

function upValue(seq: number, big = false, replyTo?: number): Up {
  const value: Up = { dir: "up", seq, text: `u${seq}`, x: seq * 1.5 };
  if (big) value.big = pattern(2000 + seq);
  if (replyTo !== undefined) value.reply_to = replyTo;
  return value;
}

/** What a client reports when its script is done. */
export interface Summary {
  id: number;
  received: number[];
  messagesReceived: number;
  messagesSent: number;
  resumes: number;
}

// --- the clients ------------------------------------------------------------

/** The Deno client's side of the script (the same as `_resume_cuts_client.py`). */
async function denoClient(
  port: number,
  name: string,
  connected: (client: Client) => void,
): Promise<Summary> {
  const client = await connect({ port, name, secret: SECRET, timeout: 10_000 });
  connected(client);
  try {
    const received: number[] = [];
    while (true) {
      const message = await client.recv({ timeout: 30_000 }) as Down;
      assert.equal(message.dir, "down");
      assert.equal(message.seq, received.length + 1, `got d${message.seq} after ${received}`);
      if (message.big !== undefined) {
        assertPattern(message.big, 1000 + message.seq, `d${message.seq}`);
      }
      assert.equal(message.text, `d${message.seq}`);
      received.push(message.seq);
      for (const action of message.then) {
        if ("sleep" in action) await delay(action.sleep);
        else if ("reply" in action) {
          await client.reply(upValue(action.reply, false, client.lastReceived));
        } else await client.send(upValue(action.send, action.big));
      }
      if (message.end) break;
    }
    await client.flush({ timeout: 20_000 });
    const extra = await client.recv({ timeout: 300 }).then((v) => v, (e) => e);
    assert.equal((extra as Error)?.name, "TimeoutError", `a message after the end: ${extra}`);
    return {
      id: client.id,
      received,
      messagesReceived: client.messagesReceived,
      messagesSent: client.messagesSent,
      resumes: client.resumes,
    };
  } finally {
    await client.close();
  }
}

/** A client of either language, running its side of the script. */
export interface RunningClient {
  done: Promise<Summary>;
  /** Ends the client if it is still running (Python: SIGKILL); never throws. */
  kill(): Promise<void>;
}

export function startClient(lang: "deno" | "python", port: number): RunningClient {
  if (lang === "deno") {
    let client: Client | undefined;
    const done = denoClient(port, "deno-site", (c) => client = c);
    done.catch(() => {});
    return { done, kill: async () => await client?.close().catch(() => {}) };
  }
  const child = spawnPython(PYTHON_CLIENT, [String(port), SECRET, "python-site", String(WORDS)]);
  const output = child.output();
  const done = output.then(({ code, stdout, stderr }) => {
    const err = new TextDecoder().decode(stderr);
    if (code !== 0) throw new Error(`python exited with ${code}:\n${err}`);
    return JSON.parse(new TextDecoder().decode(stdout)) as Summary;
  });
  done.catch(() => {});
  return {
    done,
    kill: async () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited.
      }
      await output.catch(() => {});
    },
  };
}

// --- the server's side --------------------------------------------------------

/** What the server saw, for the assertions. */
export interface ServerLog {
  ups: { value: Up; late: boolean; replyTo?: number }[];
  events: string[];
  resumedIds: number[];
}

export function watch(server: Server): ServerLog {
  const log: ServerLog = { ups: [], events: [], resumedIds: [] };
  for (const type of ["join", "disconnect", "resume", "leave"] as const) {
    server.addEventListener(type, (e: ClientEvent) => {
      log.events.push(type);
      if (type === "resume") log.resumedIds.push(e.clientId);
    });
  }
  server.addEventListener("late", (e: LateReplyEvent) => {
    log.ups.push({ value: e.value as Up, late: true, replyTo: e.replyTo });
  });
  return log;
}

/** Takes the client's messages as they come (late replies arrive through the `late` event). */
export async function collect(server: Server, log: ServerLog): Promise<void> {
  while (log.ups.length < MESSAGES) {
    const answers = await server.gather({ timeout: 30_000 });
    log.ups.push({ value: answers.get(0) as Up, late: false });
  }
}

export function checkUps(log: ServerLog): void {
  assert.deepStrictEqual(
    log.ups.map((u) => u.value.seq),
    [1, 2, 3, 4, 5, 6],
    "the server got each of the client's messages once, in order",
  );
  const bigs = [3];
  for (const { value, late, replyTo } of log.ups) {
    const what = `u${value.seq}`;
    assert.equal(value.dir, "up", what);
    assert.equal(value.text, what);
    assert.equal(value.x, value.seq * 1.5, what);
    if (bigs.includes(value.seq)) assertPattern(value.big, 2000 + value.seq, what);
    else assert.equal(value.big, undefined, what);
    const answers = ({ 2: 2, 5: 4 } as Record<number, number>)[value.seq];
    assert.equal(value.reply_to, answers, `${what} answers d${answers}`);
    assert.ok(!late, `${what} was taken as a late reply to d${replyTo}`);
  }
}
