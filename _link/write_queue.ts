/**
 * The write side of a connection: a queue of frames in front of one socket.
 *
 * Small frames are copied into batches (4 KiB, 16 KiB under load) that go out
 * in one socket write each, so a burst of small messages costs few writes;
 * chunks of 64 KiB or more are written from the caller's memory. A frame
 * queued when nothing waits before it goes out in one write of its own: a
 * stable one (memory that stays unchanged until written, such as a
 * broadcast's one encoding, shared by every client) from place, another
 * small one copied into a slab shared by every queue (`carve`): no batch per
 * connection, whatever the number of connections. One pump
 * writes at a time; frames queued while it writes join the next batch.
 * Callers wait for the socket only when they lent memory or when more than
 * 1 MiB waits unwritten (backpressure). When nothing has been written for
 * `idleMs`, `onIdle` is called (the connection sends a ping) and the queue
 * gives back its spare batch. Small batches, once written, go to a pool of
 * the process: a connection between messages holds no write memory.
 *
 * @module
 */

import { IdleClock, Watch, type WatchOwner } from "./idle_clock.ts";

/** Where the queue writes: `Deno.Conn` has it. */
export interface Writer {
  /** Writes some of `p`; resolves with the count written. */
  write(p: Uint8Array): Promise<number>;
}

/** Options for a {@linkcode WriteQueue}: kept, and its hooks called as its methods. */
export interface WriteQueueOptions {
  /** Turns a write failure into the error every later call gets. */
  describeError: (cause: unknown) => Error;
  /** Called when nothing was written for `idleMs` (default: never). */
  onIdle?: () => void;
  /** Milliseconds without a write before `onIdle` (0 disables). */
  idleMs?: number;
}

/** Bytes that may wait unwritten before callers are asked to wait. */
const HIGH_WATER_BYTES = 1024 * 1024;
/** Chunks smaller than this are copied when queued; larger ones are written from place. */
const COPY_BYTES = 64 * 1024;
/** Small frames queued together are copied into batches of this size, one write each. */
const BATCH_BYTES = 16 * 1024;
/** The first batch of a queue: a server may hold thousands of idle connections. */
const BATCH_MIN_BYTES = 4 * 1024;
/** Small batches written and free for any queue of the process: at most this many (256 KiB). */
const POOL_BATCHES = 64;
const pool: Uint8Array[] = [];

/** A batch of `size` bytes: from the pool when small, else new. */
function takeBatch(size: number): Uint8Array {
  return (size === BATCH_MIN_BYTES ? pool.pop() : undefined) ?? new Uint8Array(size);
}

/**
 * A small frame queued alone (nothing waits before it: the usual case of a
 * broadcast to many connections, or of one reply) is copied into a slab
 * shared by every queue of the process, in exactly its size: one buffer per
 * 16 KiB of such frames, not a batch per connection (at 10,000 connections
 * a batch each made 40 MB of buffers per broadcast, and the collector ran
 * for them). A slab is never written into twice: it is freed with its last
 * view. A peer that stops reading pins at most the slab of its frame in
 * flight, 16 KiB, as much as a full batch would.
 */
const CARVE_SLAB_BYTES = 16 * 1024;
/** The largest frame copied into a slab; larger ones go to a batch as usual. */
const CARVE_MAX_BYTES = 4 * 1024;
let carveSlab = new Uint8Array(CARVE_SLAB_BYTES);
let carvePos = 0;

/** `n` bytes of the current slab, for one small frame (8-byte aligned). */
function carve(n: number): Uint8Array {
  if (carvePos + n > CARVE_SLAB_BYTES) {
    carveSlab = new Uint8Array(CARVE_SLAB_BYTES);
    carvePos = 0;
  }
  const view = carveSlab.subarray(carvePos, carvePos + n);
  carvePos += (n + 7) & ~7;
  return view;
}

/** With progress reporting on, large chunks are written in slices of this size. */
const PROGRESS_SLICE_BYTES = 4 * 1024 * 1024;
/**
 * The most bytes given to one socket write: Deno's cost for a write grows
 * with the buffer it is given, not the bytes the kernel takes
 * (`bench/huge.ts`: 64 MiB writes move a 6 GiB model at half the rate).
 */
const WRITE_SLICE_BYTES = 16 * 1024 * 1024;

interface Mark {
  until: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A frame being reported on: its bytes in the queue's numbering. */
interface Tracked {
  from: number;
  until: number;
  report: (done: number, total: number) => void;
}

/** The write queue of one connection; see the module doc. */
export class WriteQueue implements WatchOwner {
  /** Bytes the socket has taken so far. */
  bytesSent = 0;
  readonly #writer: Writer;
  readonly #options: WriteQueueOptions;
  /** Chunks waiting to be written: sealed batches of small frames, and large chunks. */
  #pending: Uint8Array[] = [];
  /** The batch small frames are being copied into, and how full it is. */
  #tail: Uint8Array | undefined;
  #tailFill = 0;
  /**
   * Batches handed to the pump (made at the first, so an idle connection
   * holds no table), and one written full-size batch kept for reuse.
   */
  #batches: Set<ArrayBufferLike> | undefined;
  #spare: Uint8Array | undefined;
  #batchSize = BATCH_MIN_BYTES;
  #queued = 0;
  #written = 0;
  #pumping: Promise<void> | undefined;
  #error: Error | undefined;
  #marks: Mark[] = [];
  #tracked: Tracked[] = [];
  #lastWrite = performance.now();
  /** On the process's clock for `idleMs`, touched at each write (undefined: no idle calls). */
  #watch: Watch | undefined;
  #clock: IdleClock | undefined;

  /**
   * Creates the queue.
   *
   * @param writer The socket.
   * @param options Error naming and the idle callback.
   */
  constructor(writer: Writer, options: WriteQueueOptions) {
    this.#writer = writer;
    this.#options = options;
    const idleMs = options.idleMs ?? 0;
    if (idleMs > 0 && options.onIdle !== undefined) {
      // One timer for every connection of this period (`idle_clock.ts`).
      this.#clock = IdleClock.of(idleMs);
      this.#watch = new Watch(this);
      this.#clock.touch(this.#watch, this.#lastWrite);
    }
  }

  /** The idle clock's call: nothing was written for `idleMs`. */
  due(): void {
    // Never while a frame is being written: those bytes show we are alive.
    // An idle connection gives its spare batch back.
    if (this.#pumping === undefined) {
      this.#spare = undefined;
      this.#options.onIdle?.();
    } else this.#clock!.touch(this.#watch!);
  }

  /** Why writing stopped, or `undefined` while it works. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** Whether more than 1 MiB waits unwritten: a caller should wait for its mark. */
  get congested(): boolean {
    return this.#queued - this.#written > HIGH_WATER_BYTES;
  }

  /** Milliseconds since the socket last took bytes. */
  get idleFor(): number {
    return performance.now() - this.#lastWrite;
  }

  /**
   * Queues one frame. Chunks under 64 KiB are copied now (unless `stable`);
   * larger ones are written from place, so they must not change until the
   * mark is written.
   *
   * @param chunks The frame, header included.
   * @param progress Called as the frame's bytes are written: done and total.
   * @param stable Whether every chunk stays unchanged until written: a
   * frame of one small chunk is then written from place when nothing waits
   * before it (else copied into the batch being filled, for one write with
   * what follows).
   * @returns The frame's mark, for {@linkcode WriteQueue.written}.
   * @throws {Error} The queue's error if writing stopped.
   */
  push(
    chunks: readonly Uint8Array[],
    progress?: (done: number, total: number) => void,
    stable = false,
  ): number {
    if (this.#error !== undefined) throw this.#error;
    const from = this.#queued;
    const alone = this.#pumping === undefined && this.#pending.length === 0 &&
      this.#tailFill === 0;
    // One write from place; a frame of several chunks is coalesced as usual.
    const direct = alone && stable && chunks.length === 1;
    if (alone && !direct) {
      let size = 0;
      for (const chunk of chunks) size += chunk.byteLength;
      if (size <= CARVE_MAX_BYTES) return this.#pushCarved(chunks, size, from, progress);
    }
    for (const chunk of chunks) {
      const n = chunk.byteLength;
      if (direct) {
        this.#pending.push(chunk);
      } else if (n * 2 <= BATCH_BYTES) {
        if (this.#tail === undefined || this.#tailFill + n > this.#tail.byteLength) {
          // A full batch means heavy traffic: use full-size batches from now on.
          if (this.#tail !== undefined || n > this.#batchSize) this.#batchSize = BATCH_BYTES;
          this.#seal();
          const spare = this.#spare;
          this.#spare = undefined;
          this.#tail = spare?.byteLength === this.#batchSize ? spare : takeBatch(this.#batchSize);
        }
        this.#tail.set(chunk, this.#tailFill);
        this.#tailFill += n;
      } else if (n < COPY_BYTES) {
        this.#seal();
        this.#pending.push(chunk.slice());
      } else {
        // Written from place. Its head tops up the batch so that a frame
        // header queued before it goes out in the same write.
        let rest = chunk;
        if (this.#tail !== undefined && this.#tailFill > 0) {
          const head = this.#tail.byteLength - this.#tailFill;
          this.#tail.set(chunk.subarray(0, head), this.#tailFill);
          this.#tailFill += head;
          rest = chunk.subarray(head);
        }
        this.#seal();
        this.#pending.push(rest);
      }
      this.#queued += n;
    }
    if (progress !== undefined) this.#tracked.push({ from, until: this.#queued, report: progress });
    this.#pumping ??= this.#pump();
    return this.#queued;
  }

  /** Queues a small frame alone: copied into a shared slab, one write (see `carve`). */
  #pushCarved(
    chunks: readonly Uint8Array[],
    size: number,
    from: number,
    progress: ((done: number, total: number) => void) | undefined,
  ): number {
    const view = carve(size);
    let at = 0;
    for (const chunk of chunks) {
      view.set(chunk, at);
      at += chunk.byteLength;
    }
    this.#pending.push(view);
    this.#queued += size;
    if (progress !== undefined) this.#tracked.push({ from, until: this.#queued, report: progress });
    this.#pumping ??= this.#pump();
    return this.#queued;
  }

  /**
   * Waits until the socket has taken everything up to `mark`.
   *
   * @param mark A mark from {@linkcode WriteQueue.push}.
   * @returns Resolves once written.
   * @throws {Error} The queue's error if writing failed first.
   */
  written(mark: number): Promise<void> {
    if (this.#written >= mark) return Promise.resolve();
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    // Kept sorted by mark, so that each write resolves a prefix.
    let i = this.#marks.length;
    while (i > 0 && this.#marks[i - 1].until > mark) i--;
    this.#marks.splice(i, 0, { until: mark, resolve, reject });
    return promise;
  }

  /**
   * Waits until everything queued has been written.
   *
   * @returns Resolves when the queue is empty.
   * @throws {Error} The queue's error if writing failed.
   */
  async flush(): Promise<void> {
    while (this.#pumping !== undefined) await this.#pumping;
    if (this.#error !== undefined) throw this.#error;
  }

  /**
   * Stops the queue: later pushes throw `error`, waiting callers get it.
   *
   * @param error The reason.
   */
  fail(error: Error): void {
    this.#error ??= error;
    this.#stop();
  }

  /**
   * A written batch: a full-size one (heavy traffic) stays this queue's
   * spare; a small one goes to the process's pool, so that a connection
   * between messages holds no write memory and light traffic allocates none.
   */
  #keep(batch: Uint8Array): void {
    if (batch.byteLength === BATCH_BYTES) this.#spare = batch;
    else if (pool.length < POOL_BATCHES) pool.push(batch);
  }

  /** Moves the filled part of the tail batch to the pending list. */
  #seal(): void {
    if (this.#tail === undefined) return;
    if (this.#tailFill > 0) {
      this.#pending.push(this.#tail.subarray(0, this.#tailFill));
      (this.#batches ??= new Set()).add(this.#tail.buffer);
    } else {
      this.#keep(this.#tail);
    }
    this.#tail = undefined;
    this.#tailFill = 0;
  }

  async #pump(): Promise<void> {
    try {
      // The first write starts at once; frames queued while it is under way
      // are coalesced into the next.
      while (this.#error === undefined) {
        this.#seal();
        if (this.#pending.length === 0) break;
        const chunks = this.#pending;
        this.#pending = [];
        for (const chunk of chunks) {
          // After fail(), nothing more goes out: a lent chunk's caller was told already.
          if (this.#error !== undefined) break;
          await this.#writeChunk(chunk);
          if (this.#batches?.delete(chunk.buffer)) this.#keep(new Uint8Array(chunk.buffer));
        }
      }
    } catch (error) {
      this.#error ??= this.#options.describeError(error);
    } finally {
      this.#pumping = undefined;
      if (this.#error !== undefined) this.#stop();
    }
  }

  async #writeChunk(chunk: Uint8Array): Promise<void> {
    const slice = this.#tracked.length > 0 ? PROGRESS_SLICE_BYTES : WRITE_SLICE_BYTES;
    for (let off = 0; off < chunk.byteLength;) {
      const n = await this.#writer.write(chunk.subarray(off, off + slice));
      off += n;
      this.bytesSent += n; // counted as it goes, for progress on large writes
      if (this.#tracked.length > 0) this.#report(this.#written + off);
    }
    this.#written += chunk.byteLength;
    const now = this.#lastWrite = performance.now();
    if (this.#watch !== undefined) this.#clock!.touch(this.#watch, now);
    let done = 0;
    while (done < this.#marks.length && this.#marks[done].until <= this.#written) {
      this.#marks[done++].resolve();
    }
    if (done > 0) this.#marks.splice(0, done);
  }

  /** Reports progress to the frames that `position` (bytes written) has reached. */
  #report(position: number): void {
    let done = 0;
    for (const t of this.#tracked) {
      if (position <= t.from) break;
      t.report(Math.min(position, t.until) - t.from, t.until - t.from);
      if (position >= t.until) done++;
    }
    if (done > 0) this.#tracked.splice(0, done);
  }

  #stop(): void {
    this.stopTimer();
    const error = this.#error;
    if (error === undefined) return;
    for (const mark of this.#marks) mark.reject(error);
    this.#marks = [];
    this.#pending = [];
    this.#tracked = [];
    this.#tail = undefined;
  }

  /** Stops the idle timer (the connection is closing); queued frames still go out. */
  stopTimer(): void {
    if (this.#watch !== undefined) this.#clock!.remove(this.#watch);
    this.#watch = undefined;
  }
}
