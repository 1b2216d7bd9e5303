/**
 * A byte budget shared by a server's joined clients: how much received data
 * may sit in memory before it is consumed.
 *
 * A large frame's body is reserved step by step as it arrives (4 MiB at a
 * time), not all at once when its header announces it: a client that
 * announces 200 MiB and then stalls holds one step, not the budget, so the
 * other clients' uploads go on. The steps add up to one
 * {@linkcode Reservation} that travels with the message and is released
 * when the message is taken. When the budget is spent, reads wait and TCP
 * pushes back on the senders, so folding 16 uploads of 64 MiB into a running
 * sum never holds all 16 at once. While only frames in progress hold the
 * budget (no received message waits to be taken), the oldest of them may go
 * on over the limit, so a frame larger than the whole budget still
 * completes and frames in progress never deadlock each other. Memory held
 * is at most the budget, plus one step per client reading a frame, plus the
 * oldest frame.
 *
 * @module
 */

/** The default budget: room for a few model-sized uploads. */
export const DEFAULT_RECEIVE_BUFFER_BYTES: number = 128 * 1024 * 1024;
/** How much of a large body is reserved at a time. */
export const STEP_BYTES = 4 * 1024 * 1024;

/** Bytes held of a {@linkcode ByteBudget}; release it once (dispose does the same). */
export class Reservation implements Disposable {
  readonly #budget: ByteBudget;
  #bytes: number;

  /**
   * Prefer {@linkcode ByteBudget.force} and {@linkcode ByteBudget.begin}.
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

  /**
   * Adds bytes already counted by the budget (a granted step).
   *
   * @param bytes How many.
   */
  grow(bytes: number): void {
    this.#bytes += bytes;
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
  frame: FrameBudget;
  bytes: number;
  resolve: (granted: boolean) => void;
}

/** A frame being read within a budget: its reservation grows step by step. */
export class FrameBudget {
  readonly #budget: ByteBudget;
  /** What the frame holds so far. */
  readonly reservation: Reservation;

  /**
   * Prefer {@linkcode ByteBudget.begin}.
   *
   * @param budget The budget.
   */
  constructor(budget: ByteBudget) {
    this.#budget = budget;
    this.reservation = new Reservation(budget, 0);
  }

  /**
   * Reserves `bytes` more for this frame, once they fit or once it is the
   * oldest frame in progress.
   *
   * @param bytes How many.
   * @param cancel Gives up waiting (the promise then resolves `false`).
   * @returns Whether it was granted.
   */
  reserve(bytes: number, cancel?: AbortSignal): Promise<boolean> {
    return this.#budget.step(this, bytes, cancel);
  }

  /**
   * The frame is complete: its reservation now travels with the message.
   *
   * @returns The reservation.
   */
  end(): Reservation {
    this.#budget.ended(this);
    return this.reservation;
  }

  /** The frame failed or was read without the budget: release what it holds. */
  abort(): void {
    this.#budget.ended(this);
    this.reservation.release();
  }
}

/** A counting semaphore over bytes, fair to frames in order of their start. */
export class ByteBudget {
  readonly #limit: number;
  #used = 0;
  #waiters: Waiter[] = [];
  /** Frames in progress, oldest first. */
  readonly #frames: FrameBudget[] = [];
  /** Bytes held by frames in progress (the rest is held by received messages not yet taken). */
  #inFlight = 0;

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

  /**
   * Starts reading a frame within the budget.
   *
   * @returns The frame's budget; end or abort it.
   */
  begin(): FrameBudget {
    const frame = new FrameBudget(this);
    this.#frames.push(frame);
    return frame;
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
   * Whether a step fits, or is the oldest frame's while only frames in
   * progress hold the budget: waiting then could only deadlock, since no
   * message is there to be taken and free room.
   */
  #grants(frame: FrameBudget, bytes: number): boolean {
    return this.#used + bytes <= this.#limit ||
      this.#frames[0] === frame && this.#used === this.#inFlight;
  }

  /**
   * Reserves a step of a frame (see {@linkcode FrameBudget.reserve}).
   *
   * @param frame The frame.
   * @param bytes How many.
   * @param cancel Gives up waiting.
   * @returns Whether it was granted.
   */
  step(frame: FrameBudget, bytes: number, cancel?: AbortSignal): Promise<boolean> {
    if (this.#waiters.length === 0 && this.#grants(frame, bytes)) {
      this.#used += bytes;
      this.#inFlight += bytes;
      frame.reservation.grow(bytes);
      return Promise.resolve(true);
    }
    if (cancel?.aborted) return Promise.resolve(false);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    const waiter: Waiter = { frame, bytes, resolve };
    const onCancel = () => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      resolve(false);
      this.#grant();
    };
    cancel?.addEventListener("abort", onCancel, { once: true });
    waiter.resolve = (granted) => {
      cancel?.removeEventListener("abort", onCancel);
      resolve(granted);
    };
    this.#waiters.push(waiter);
    this.#grant();
    return promise;
  }

  /**
   * Forgets a frame that ended; the next oldest may now go over the limit.
   *
   * @param frame The frame.
   */
  ended(frame: FrameBudget): void {
    const i = this.#frames.indexOf(frame);
    if (i >= 0) {
      this.#frames.splice(i, 1);
      this.#inFlight -= frame.reservation.bytes;
    }
    this.#grant();
  }

  /**
   * Takes back released bytes and grants waiting steps that now fit.
   * Called by {@linkcode Reservation.release}.
   *
   * @param bytes How many.
   */
  returned(bytes: number): void {
    this.#used -= bytes;
    this.#grant();
  }

  /** Grants the waiting steps that fit, first come first served, and the oldest frame's. */
  #grant(): void {
    for (let i = 0; i < this.#waiters.length;) {
      const waiter = this.#waiters[i];
      if (!this.#grants(waiter.frame, waiter.bytes)) {
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      this.#used += waiter.bytes;
      this.#inFlight += waiter.bytes;
      waiter.frame.reservation.grow(waiter.bytes);
      waiter.resolve(true);
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
  #frame: FrameBudget | undefined;
  #wait: AbortController | undefined;

  /** Whether a step is being waited for (reading is paused meanwhile). */
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
   * Before each read into a large body: how far reading may go.
   *
   * @param filled Body bytes already in memory.
   * @param total The body's size.
   * @param start Whether this is the body's first call.
   * @returns The offset up to which bytes may be read (more than `filled`).
   */
  async allowance(filled: number, total: number, start: boolean): Promise<number> {
    if (start) {
      this.#frame?.abort();
      this.#frame = this.budget === undefined || !this.#metered ? undefined : this.budget.begin();
    }
    const frame = this.#frame;
    if (frame === undefined) return total;
    const reserved = frame.reservation.bytes;
    if (filled < reserved) return reserved;
    const step = Math.min(STEP_BYTES, total - reserved);
    const wait = new AbortController();
    this.#wait = wait;
    try {
      if (await frame.reserve(step, wait.signal)) return reserved + step;
    } finally {
      this.#wait = undefined;
    }
    // Unmetered (or closing) while waiting: read the rest without the budget.
    frame.abort();
    this.#frame = undefined;
    return total;
  }

  /**
   * The frame is complete.
   *
   * @returns What it holds of the budget, to travel with its message.
   */
  complete(): Reservation | undefined {
    const frame = this.#frame;
    this.#frame = undefined;
    return frame?.end();
  }

  /** The connection ended: release the frame in progress and stop waiting. */
  abort(): void {
    this.#wait?.abort();
    this.#frame?.abort();
    this.#frame = undefined;
  }
}
