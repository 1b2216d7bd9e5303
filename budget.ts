/**
 * A byte budget shared by a server's connections: how much received data
 * may wait in memory before it is consumed.
 *
 * Before a connection allocates a large frame body it reserves the body's
 * length; the reservation is returned when the message is taken from its
 * inbox. When the budget is spent, further large frames wait in the kernel
 * and TCP pushes back on their senders, so folding 16 uploads of 64 MiB into
 * a running sum never holds all 16 at once. A single frame larger than the
 * whole budget is still admitted when nothing else is reserved.
 *
 * @module
 */

/** The default budget: room for a few model-sized uploads. */
export const DEFAULT_RECEIVE_BUFFER_BYTES: number = 128 * 1024 * 1024;

/** A first-come, first-served counting semaphore over bytes. */
export class ByteBudget {
  readonly #limit: number;
  #used = 0;
  #waiters: { bytes: number; resolve: () => void }[] = [];

  /**
   * Creates a budget.
   *
   * @param limit The bytes that may be reserved at once.
   * @throws {RangeError} If the limit is not a positive integer.
   */
  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit <= 0) {
      throw new RangeError(`Invalid receiveBufferBytes: "${limit}" is not a positive integer`);
    }
    this.#limit = limit;
  }

  /** Bytes reserved now. */
  get used(): number {
    return this.#used;
  }

  #fits(bytes: number): boolean {
    return this.#used === 0 || this.#used + bytes <= this.#limit;
  }

  /**
   * Reserves `bytes`, waiting for earlier reservations to be released if needed.
   *
   * @param bytes How many.
   * @param signal Gives up waiting: the promise rejects with the signal's reason.
   * @returns `undefined` when granted at once, otherwise a promise of the grant.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<void> | undefined {
    if (this.#waiters.length === 0 && this.#fits(bytes)) {
      this.#used += bytes;
      return undefined;
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const onAbort = () => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      reject(signal!.reason);
    };
    const waiter = {
      bytes,
      resolve: () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#waiters.push(waiter);
    return promise;
  }

  /**
   * Reserves `bytes` at once, over the limit if need be (for data already in memory).
   *
   * @param bytes How many.
   */
  force(bytes: number): void {
    this.#used += bytes;
  }

  /**
   * Returns a reservation and grants waiting ones that now fit, in order.
   *
   * @param bytes How many.
   */
  release(bytes: number): void {
    this.#used -= bytes;
    while (this.#waiters.length > 0 && this.#fits(this.#waiters[0].bytes)) {
      const waiter = this.#waiters.shift()!;
      this.#used += waiter.bytes;
      waiter.resolve();
    }
  }
}
