/**
 * Test helpers (not published): run a Deno script as a child process with a
 * time limit, wait for a line of its output (such as the port a server
 * prints), and make sure the process is gone when the test ends.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** What a finished child process left behind. */
export interface Finished {
  /** The exit code (128 + n when killed by signal n). */
  readonly code: number;
  /** Everything written to stdout. */
  readonly stdout: string;
  /** Everything written to stderr. */
  readonly stderr: string;
}

/** Options for {@linkcode runDeno} and {@linkcode spawnDeno}. */
export interface DenoRunOptions {
  /** Flags for `deno run` before the script (default `["-A"]`). */
  readonly denoFlags?: readonly string[];
  /** Environment variables to add. */
  readonly env?: Record<string, string>;
  /** The working directory (default: this process's). */
  readonly cwd?: string;
}

/** Milliseconds a child may run before it is killed (default for {@linkcode runDeno}). */
const DEFAULT_LIMIT_MS = 30_000;

/** `deno run <flags> <script> <args>` with this process's Deno. */
function command(script: string, args: readonly string[], options: DenoRunOptions): string[] {
  return ["run", ...(options.denoFlags ?? ["-A"]), script, ...args];
}

/**
 * Runs `deno run -A <script> <args>` to completion, killing it after `limitMs`.
 *
 * @param script The script's path or URL.
 * @param args Its arguments.
 * @param options Flags for `deno run`, environment, working directory.
 * @param limitMs Milliseconds before the child is killed (default 30,000).
 * @returns The exit code and the output.
 */
export async function runDeno(
  script: string,
  args: readonly string[],
  options: DenoRunOptions = {},
  limitMs: number = DEFAULT_LIMIT_MS,
): Promise<Finished> {
  await using child = spawnDeno(script, args, options);
  return await child.finish(limitMs);
}

/** A running child process whose output is collected as it comes. */
export class DenoChild implements AsyncDisposable {
  readonly #process: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #reading: Promise<void>;
  #stdout = "";
  #stderr = "";
  #exited = false;
  readonly #waiters = new Set<() => void>();

  /**
   * Starts the child. Prefer {@linkcode spawnDeno}.
   *
   * @param args The arguments of `deno`.
   * @param options The environment and working directory.
   */
  constructor(args: string[], options: DenoRunOptions) {
    this.#process = new Deno.Command(Deno.execPath(), {
      args,
      env: options.env,
      cwd: options.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#status = this.#process.status.then((status) => {
      this.#exited = true;
      this.#wake();
      return status;
    });
    this.#reading = Promise.all([
      this.#collect(this.#process.stdout, (text) => this.#stdout += text),
      this.#collect(this.#process.stderr, (text) => this.#stderr += text),
    ]).then(() => {});
  }

  async #collect(stream: ReadableStream<Uint8Array>, add: (text: string) => void): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      add(text);
      this.#wake();
    }
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /** The process id. */
  get pid(): number {
    return this.#process.pid;
  }

  /** What the child wrote to stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }

  /** What the child wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Waits until stdout matches `pattern`.
   *
   * @param pattern What to look for in everything written so far.
   * @param limitMs Milliseconds to wait (default 15,000).
   * @returns The match.
   * @throws {Error} If the child exits or time runs out first (with its output).
   */
  async waitFor(pattern: RegExp, limitMs = 15_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + limitMs;
    while (true) {
      const match = this.#stdout.match(pattern);
      if (match) return match;
      if (this.#exited || Date.now() >= deadline) {
        throw new Error(
          `Child ${this.#exited ? "exited" : "timed out"} before printing ${pattern}:\n` +
            `stdout:\n${this.#stdout}\nstderr:\n${this.#stderr}`,
        );
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#waiters.add(resolve);
      const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
      await promise;
      clearTimeout(timer);
      this.#waiters.delete(resolve);
    }
  }

  /**
   * Waits for the child to exit, killing it after `limitMs`.
   *
   * @param limitMs Milliseconds to wait (default 30,000).
   * @returns The exit code and the whole output.
   * @throws {Error} If it had to be killed (with its output).
   */
  async finish(limitMs: number = DEFAULT_LIMIT_MS): Promise<Finished> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), limitMs);
    });
    const outcome = await Promise.race([this.#status, expired]);
    clearTimeout(timer);
    if (outcome === "expired") {
      await this.kill();
      throw new Error(
        `Child still running after ${limitMs} ms; killed it:\n` +
          `stdout:\n${this.#stdout}\nstderr:\n${this.#stderr}`,
      );
    }
    await this.#reading;
    return { code: outcome.code, stdout: this.#stdout, stderr: this.#stderr };
  }

  /**
   * Kills the child (SIGKILL) if it still runs, and waits for it and its output.
   *
   * @returns Resolves when it is gone.
   */
  async kill(): Promise<void> {
    if (!this.#exited) {
      try {
        this.#process.kill("SIGKILL");
      } catch {
        // It exited meanwhile.
      }
    }
    await this.#status;
    await this.#reading;
  }

  /** Kills the child if it still runs: `await using child = spawnDeno(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.kill();
  }
}

/**
 * Starts `deno run -A <script> <args>` with piped output.
 *
 * @param script The script's path or URL.
 * @param args Its arguments.
 * @param options Flags for `deno run`, environment, working directory.
 * @returns The running child; dispose it to make sure it is gone.
 */
export function spawnDeno(
  script: string,
  args: readonly string[],
  options: DenoRunOptions = {},
): DenoChild {
  return new DenoChild(command(script, args, options), options);
}

/**
 * The absolute path of a file next to the caller.
 *
 * @param relative The path relative to `base`.
 * @param base The caller's `import.meta.url`.
 * @returns The absolute path.
 */
export function pathOf(relative: string, base: string): string {
  return fileURLToPath(new URL(relative, base));
}
