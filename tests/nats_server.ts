/**
 * A real `nats-server` for the NATS tests and the benchmark: JetStream on
 * disk in a temporary directory, on a free loopback port, restartable on the
 * same port and directory. Where `nats-server` is missing, starting one
 * fails with the line that installs it: the tests fail, they are not skipped.
 *
 * @module
 */

/** How to install the server, in the error when it is missing. */
export const INSTALL_LINE =
  "nats-server is not installed: apt-get install nats-server (Debian and Ubuntu; " +
  "or a release from https://github.com/nats-io/nats-server/releases on PATH)";

/** Options of {@linkcode NatsServer.start}. */
export interface NatsServerOptions {
  /** More command-line arguments: `--user u --pass p`, `--tls …`. */
  args?: string[];
  /** Milliseconds to wait for "Server is ready" (default 15,000). */
  timeout?: number;
}

/** A free TCP port on 127.0.0.1 (bound once, then released). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** One `nats-server -js` process, restartable. */
export class NatsServer implements AsyncDisposable {
  readonly port: number;
  readonly dir: string;
  readonly #options: NatsServerOptions;
  #process: Deno.ChildProcess | undefined;
  #log: string[] = [];

  private constructor(port: number, dir: string, options: NatsServerOptions) {
    this.port = port;
    this.dir = dir;
    this.#options = options;
  }

  /**
   * Starts a server on a free port with JetStream in a new temporary directory.
   *
   * @param options More arguments and the readiness timeout.
   * @returns The running server.
   * @throws {Error} With {@linkcode INSTALL_LINE} if `nats-server` is not on PATH, or if it
   * did not get ready in time (with its last log lines).
   */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const server = new NatsServer(freePort(), await Deno.makeTempDir(), options);
    await server.#spawn();
    return server;
  }

  /** `127.0.0.1:PORT`. */
  get url(): string {
    return `127.0.0.1:${this.port}`;
  }

  async #spawn(): Promise<void> {
    const args = ["-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.dir];
    let process: Deno.ChildProcess;
    try {
      process = new Deno.Command("nats-server", {
        args: [...args, ...(this.#options.args ?? [])],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new Error(INSTALL_LINE);
      throw error;
    }
    this.#process = process;
    this.#log = [];
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => ready = resolve);
    (async () => {
      const lines = process.stderr.pipeThrough(new TextDecoderStream());
      let pending = "";
      for await (const text of lines) {
        const parts = (pending + text).split("\n");
        pending = parts.pop()!;
        for (const line of parts) {
          this.#log.push(line);
          if (this.#log.length > 40) this.#log.shift();
          if (line.includes("Server is ready")) ready();
        }
      }
    })().catch(() => {});
    const timeout = this.#options.timeout ?? 15_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const failed = await Promise.race([
      isReady.then(() => false),
      process.status.then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), timeout)),
    ]);
    clearTimeout(timer);
    if (failed) {
      await this.stop();
      throw new Error(`nats-server did not start:\n${this.#log.join("\n")}`);
    }
  }

  /**
   * Stops the server (SIGKILL by default: a crash; the files on disk stay).
   *
   * @param signal The signal.
   * @returns Resolves once the process exited.
   */
  async stop(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const process = this.#process;
    this.#process = undefined;
    if (process === undefined) return;
    try {
      process.kill(signal);
    } catch {
      // It exited already.
    }
    await process.status;
  }

  /**
   * Starts the server again on the same port and directory (JetStream recovers its streams).
   *
   * @returns Resolves once it is ready.
   */
  async restart(): Promise<void> {
    await this.stop();
    await this.#spawn();
  }

  /** Stops the server and removes its directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
