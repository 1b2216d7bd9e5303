/**
 * A byte budget shared by a server's connections: how much received data
 * may wait in memory before it is consumed.
 *
 * Before a connection allocates a large frame body it reserves the body's
 * length; the {@linkcode Reservation} travels with the message and is
 * released when the message is taken from its inbox. When the budget is
 * spent, further large frames wait in the kernel and TCP pushes back on
 * their senders, so folding 16 uploads of 64 MiB into a running sum never
 * holds all 16 at once. A single frame larger than the whole budget is still
 * admitted when nothing else is reserved.
 *
 * @module
 */

/** The default budget: room for a few model-sized uploads. */
export const DEFAULT_RECEIVE_BUFFER_BYTES: number = 128 * 1024 * 1024;

/** Bytes held of a {@linkcode ByteBudget}; release it once (dispose does the same). */
export class Reservation implements Disposable {
  readonly #budget: ByteBudget;
  #bytes: number;

  /**
   * Prefer {@linkcode ByteBudget.reserve} and {@linkcode ByteBudget.force}.
   *
   * @param budget The budget.
   * @param bytes The bytes held.
   */
  constructor(budget: ByteBudget, bytes: number) {
    this.#budget = budget;
    this.#bytes = bytes;
  }

  /** The bytes held (0 once released). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Returns the bytes to the budget; later calls do nothing. */
  release(): void {
    const bytes = this.#bytes;
    this.#bytes = 0;
    if (bytes > 0) this.#budget.returned(bytes);
  }

  /** Releases the reservation. */
  [Symbol.dispose](): void {
    this.release();
  }
}

interface Waiter {
  bytes: number;
  resolve: (reservation: Reservation | undefined) => void;
}

/** A first-come, first-served counting semaphore over bytes. */
export class ByteBudget {
  readonly #limit: number;
  #used = 0;
  #waiters: Waiter[] = [];

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
   * Reserves `bytes`, after earlier reservations are released if need be.
   *
   * @param bytes How many.
   * @param cancel Gives up waiting: the promise then resolves with `undefined`
   * and nothing is reserved.
   * @returns The reservation, or `undefined` if cancelled first.
   */
  reserve(bytes: number, cancel?: AbortSignal): Promise<Reservation | undefined> {
    if (this.#waiters.length === 0 && this.#fits(bytes)) {
      this.#used += bytes;
      return Promise.resolve(new Reservation(this, bytes));
    }
    if (cancel?.aborted) return Promise.resolve(undefined);
    const { promise, resolve } = Promise.withResolvers<Reservation | undefined>();
    const waiter: Waiter = { bytes, resolve };
    const onCancel = () => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      resolve(undefined);
    };
    cancel?.addEventListener("abort", onCancel, { once: true });
    waiter.resolve = (reservation) => {
      cancel?.removeEventListener("abort", onCancel);
      resolve(reservation);
    };
    this.#waiters.push(waiter);
    return promise;
  }

  /**
   * Reserves `bytes` at once, over the limit if need be (for data already in memory).
   *
   * @param bytes How many.
   * @returns The reservation.
   */
  force(bytes: number): Reservation {
    this.#used += bytes;
    return new Reservation(this, bytes);
  }

  /**
   * Takes back released bytes and grants waiting reservations that now fit,
   * in order. Called by {@linkcode Reservation.release}.
   *
   * @param bytes How many.
   */
  returned(bytes: number): void {
    this.#used -= bytes;
    while (this.#waiters.length > 0 && this.#fits(this.#waiters[0].bytes)) {
      const waiter = this.#waiters.shift()!;
      this.#used += waiter.bytes;
      waiter.resolve(new Reservation(this, waiter.bytes));
    }
  }
}
