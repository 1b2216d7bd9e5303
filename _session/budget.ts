/**
 * A byte budget shared by a server's joined clients: how much received data
 * may sit in memory before it is consumed.
 *
 * Before a connection allocates a large frame body it reserves the body's
 * length; the {@linkcode Reservation} travels with the message and is
 * released when the message is taken from its inbox. When the budget is
 * spent, further large frames wait in the kernel and TCP pushes back on
 * their senders, so folding 16 uploads of 64 MiB into a running sum never
 * holds all 16 at once. A frame larger than the whole budget is admitted
 * when nothing else is reserved.
 *
 * Fairness: a client that holds nothing of the budget may always reserve a
 * frame of up to its fair share (the budget divided by the number of
 * clients), even over the limit. So one client that announces a huge frame
 * and stalls, or whose messages nobody takes, cannot starve the others'
 * uploads. Memory held is at most twice the budget (the budget, plus one
 * fair share per client), or one frame larger than it.
 *
 * @module
 */

/** The default budget: room for a few model-sized uploads. */
export const DEFAULT_RECEIVE_BUFFER_BYTES: number = 128 * 1024 * 1024;

/** Bytes held of a {@linkcode ByteBudget}; release it once (dispose does the same). */
export class Reservation implements Disposable {
  readonly #budget: ByteBudget;
  readonly #holder: object | undefined;
  #bytes: number;

  /**
   * Prefer {@linkcode ByteBudget.reserve} and {@linkcode ByteBudget.force}.
   *
   * @param budget The budget.
   * @param bytes The bytes held.
   * @param holder Who holds them (a connection's meter), for fairness.
   */
  constructor(budget: ByteBudget, bytes: number, holder?: object) {
    this.#budget = budget;
    this.#bytes = bytes;
    this.#holder = holder;
  }

  /** The bytes held (0 once released). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Returns the bytes to the budget; later calls do nothing. */
  release(): void {
    const bytes = this.#bytes;
    this.#bytes = 0;
    if (bytes > 0) this.#budget.returned(bytes, this.#holder);
  }

  /** Releases the reservation. */
  [Symbol.dispose](): void {
    this.release();
  }
}

interface Waiter {
  bytes: number;
  holder: object | undefined;
  resolve: (reservation: Reservation | undefined) => void;
}

/** A counting semaphore over bytes, first come first served, with a fair share per client. */
export class ByteBudget {
  readonly #limit: number;
  readonly #share: number;
  #used = 0;
  #waiters: Waiter[] = [];
  /** Bytes held by each holder. */
  readonly #held = new Map<object, number>();

  /**
   * Creates a budget.
   *
   * @param limit The bytes that may be reserved at once.
   * @param clients How many clients share it: a holder that holds nothing may
   * always reserve up to `limit / clients` (default: no fair share).
   * @throws {RangeError} If the limit is not a positive integer.
   */
  constructor(limit: number, clients?: number) {
    if (!Number.isSafeInteger(limit) || limit <= 0) {
      throw new RangeError(`Invalid receiveBufferBytes: "${limit}" is not a positive integer`);
    }
    this.#limit = limit;
    this.#share = clients === undefined ? 0 : Math.floor(limit / Math.max(1, clients));
  }

  /** Bytes reserved now. */
  get used(): number {
    return this.#used;
  }

  /**
   * Bytes held by one holder now.
   *
   * @param holder The holder.
   * @returns Its bytes.
   */
  heldBy(holder: object): number {
    return this.#held.get(holder) ?? 0;
  }

  #grants(bytes: number, holder: object | undefined): boolean {
    return this.#used === 0 || this.#used + bytes <= this.#limit ||
      holder !== undefined && bytes <= this.#share && !this.#held.has(holder);
  }

  #take(bytes: number, holder: object | undefined): Reservation {
    this.#used += bytes;
    if (holder !== undefined) this.#held.set(holder, (this.#held.get(holder) ?? 0) + bytes);
    return new Reservation(this, bytes, holder);
  }

  /**
   * Reserves `bytes` once they fit (see the module doc for when).
   *
   * @param bytes How many.
   * @param holder Who reserves (a connection's meter), for the fair share.
   * @param cancel Gives up waiting: the promise then resolves with `undefined`
   * and nothing is reserved.
   * @returns The reservation, or `undefined` if cancelled first.
   */
  reserve(bytes: number, holder?: object, cancel?: AbortSignal): Promise<Reservation | undefined> {
    if (this.#waiters.length === 0 && this.#grants(bytes, holder)) {
      return Promise.resolve(this.#take(bytes, holder));
    }
    if (cancel?.aborted) return Promise.resolve(undefined);
    const { promise, resolve } = Promise.withResolvers<Reservation | undefined>();
    const waiter: Waiter = { bytes, holder, resolve };
    const onCancel = () => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      resolve(undefined);
      this.#grant();
    };
    cancel?.addEventListener("abort", onCancel, { once: true });
    waiter.resolve = (reservation) => {
      cancel?.removeEventListener("abort", onCancel);
      resolve(reservation);
    };
    this.#waiters.push(waiter);
    // A waiter that fits by its fair share is granted at once, whatever waits before it.
    this.#grant();
    return promise;
  }

  /**
   * Reserves `bytes` at once, over the limit if need be (for data already in memory).
   *
   * @param bytes How many.
   * @param holder Who holds them.
   * @returns The reservation.
   */
  force(bytes: number, holder?: object): Reservation {
    return this.#take(bytes, holder);
  }

  /**
   * Takes back released bytes and grants waiting reservations that now fit.
   * Called by {@linkcode Reservation.release}.
   *
   * @param bytes How many.
   * @param holder Who held them.
   */
  returned(bytes: number, holder?: object): void {
    this.#used -= bytes;
    if (holder !== undefined) {
      const left = (this.#held.get(holder) ?? 0) - bytes;
      if (left > 0) this.#held.set(holder, left);
      else this.#held.delete(holder);
    }
    this.#grant();
  }

  /** Grants waiting reservations: in order while they fit, and any within its fair share. */
  #grant(): void {
    for (let i = 0; i < this.#waiters.length;) {
      const waiter = this.#waiters[i];
      const inOrder = i === 0 && (this.#used === 0 || this.#used + waiter.bytes <= this.#limit);
      const fair = waiter.holder !== undefined && waiter.bytes <= this.#share &&
        !this.#held.has(waiter.holder);
      if (!inOrder && !fair) {
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      waiter.resolve(this.#take(waiter.bytes, waiter.holder));
    }
  }
}

/**
 * One connection's use of the budget: the frame it is reading, metered
 * (the default) or not (while a gather, which holds every answer anyway,
 * reads the connection).
 */
export class Meter {
  /** The budget; `undefined` until the client is admitted (and on a client). */
  budget: ByteBudget | undefined;
  #metered = true;
  #reservation: Reservation | undefined;
  #wait: AbortController | undefined;

  /** Whether a reservation is being waited for (reading is paused meanwhile). */
  get waiting(): boolean {
    return this.#wait !== undefined;
  }

  /** Whether large frames are read within the budget. */
  get metered(): boolean {
    return this.#metered;
  }

  set metered(value: boolean) {
    this.#metered = value;
    if (!value) this.#wait?.abort();
  }

  /**
   * Before a large body is read: reserves its length (the first call of a
   * body) and says how far reading may go: the whole body.
   *
   * @param _filled Body bytes already in memory (the whole body is reserved at once).
   * @param total The body's size.
   * @param start Whether this is the body's first call.
   * @returns The offset up to which bytes may be read: `total`.
   */
  async allowance(_filled: number, total: number, start: boolean): Promise<number> {
    if (!start || this.budget === undefined || !this.#metered) return total;
    this.#reservation?.release();
    const wait = new AbortController();
    this.#wait = wait;
    try {
      // Unmetered (or closing) while waiting: read it without the budget.
      this.#reservation = await this.budget.reserve(total, this, wait.signal);
    } finally {
      this.#wait = undefined;
    }
    return total;
  }

  /**
   * The frame is complete.
   *
   * @returns What it holds of the budget, to travel with its message.
   */
  complete(): Reservation | undefined {
    const reservation = this.#reservation;
    this.#reservation = undefined;
    return reservation;
  }

  /** The connection ended: release the frame in progress and stop waiting. */
  abort(): void {
    this.#wait?.abort();
    this.#reservation?.release();
    this.#reservation = undefined;
  }
}
