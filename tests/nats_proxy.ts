/**
 * A TCP proxy on 127.0.0.1 in front of a NATS server, for the tests that
 * must keep one client away from NATS while the others go on: `cut()`
 * closes the client's connections and refuses new ones (each is closed as
 * soon as it is accepted) until `restore()`.
 *
 * @module
 */

/** A proxy to `127.0.0.1:port`, whose connections can be cut. */
export class CutProxy implements AsyncDisposable {
  readonly #listener: Deno.Listener;
  readonly #target: number;
  readonly #pairs = new Set<[Deno.Conn, Deno.Conn | undefined]>();
  readonly #accepting: Promise<void>;
  #cut = false;

  /**
   * Listens on a free port and forwards each connection to `target`.
   *
   * @param target The port of the server on 127.0.0.1.
   */
  constructor(target: number) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  /** `127.0.0.1:PORT`, to give the client instead of the server's address. */
  get url(): string {
    return `127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;
  }

  /** Connections forwarded now. */
  get connections(): number {
    return this.#pairs.size;
  }

  async #accept(): Promise<void> {
    for await (const conn of this.#listener) {
      if (this.#cut) {
        conn.close();
        continue;
      }
      void this.#forward(conn);
    }
  }

  async #forward(conn: Deno.Conn): Promise<void> {
    const pair: [Deno.Conn, Deno.Conn | undefined] = [conn, undefined];
    this.#pairs.add(pair);
    try {
      pair[1] = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
      if (this.#cut) return;
      await Promise.race([pump(conn, pair[1]), pump(pair[1], conn)]);
    } catch {
      // The server is down, or the pair was cut.
    } finally {
      this.#close(pair);
    }
  }

  #close(pair: [Deno.Conn, Deno.Conn | undefined]): void {
    this.#pairs.delete(pair);
    for (const conn of pair) {
      try {
        conn?.close();
      } catch {
        // Closed already.
      }
    }
  }

  /** Closes every connection, and each new one as soon as it comes, until {@linkcode restore}. */
  cut(): void {
    this.#cut = true;
    for (const pair of [...this.#pairs]) this.#close(pair);
  }

  /** Forwards new connections again. */
  restore(): void {
    this.#cut = false;
  }

  /** Stops listening and closes every connection. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.cut();
    this.#listener.close();
    await this.#accepting.catch(() => {});
  }
}

/** Copies `from` to `to` until `from` ends or fails. */
async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await from.read(buffer);
    if (n === null) return;
    let written = 0;
    while (written < n) written += await to.write(buffer.subarray(written, n));
  }
}
