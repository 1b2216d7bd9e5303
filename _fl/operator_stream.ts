/**
 * The operator view's live feed: Server-Sent Events to each open page, with a
 * bounded queue per page (a page that stops reading is cut off and reconnects
 * to a fresh snapshot), a comment every 15 s so that proxies keep the stream
 * open, and a cap on how many pages may listen at once.
 *
 * @module
 */

/** Bytes a page may have waiting in its stream before it is cut off. */
const MAX_QUEUED_BYTES = 1024 * 1024;
/** Milliseconds between two keep-alive comments. */
const KEEPALIVE_MS = 15_000;

const encoder = new TextEncoder();

/** The open event streams of the operator view's pages. */
export class EventStreams {
  readonly #streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  readonly #max: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  /**
   * Creates the set.
   *
   * @param max How many pages may listen at once.
   */
  constructor(max: number) {
    this.#max = max;
  }

  /** How many pages listen now. */
  get size(): number {
    return this.#streams.size;
  }

  /**
   * Opens a stream for one page, starting with `first` (an event).
   *
   * @param first The first event, e.g. the snapshot, already formatted with {@linkcode format}.
   * @returns The response, or a 503 when `max` pages already listen.
   */
  open(first: string): Response {
    if (this.#closed || this.#streams.size >= this.#max) {
      return Response.json(
        { error: `Too many event streams: at most ${this.#max} pages may listen at once` },
        { status: 503 },
      );
    }
    let mine: ReadableStreamDefaultController<Uint8Array> | undefined;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        mine = controller;
        this.#streams.add(controller);
        controller.enqueue(encoder.encode(`retry: 2000\n\n${first}`));
        this.#keepAlive();
      },
      cancel: () => {
        if (mine !== undefined) this.#forget(mine);
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: MAX_QUEUED_BYTES }));
    return new Response(body, {
      headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store" },
    });
  }

  /**
   * Sends one event to every page; a page whose queue is over its bound is cut off.
   *
   * @param text The event, formatted with {@linkcode format}.
   */
  send(text: string): void {
    const bytes = encoder.encode(text);
    for (const controller of this.#streams) {
      if ((controller.desiredSize ?? 0) < bytes.byteLength) {
        this.#drop(controller);
        continue;
      }
      controller.enqueue(bytes);
    }
  }

  /** Ends every stream, and refuses new ones. */
  close(): void {
    this.#closed = true;
    for (const controller of this.#streams) this.#drop(controller);
  }

  #drop(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.#forget(controller);
    try {
      controller.close();
    } catch {
      // Already closed or cancelled by the page.
    }
  }

  #forget(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.#streams.delete(controller);
    if (this.#streams.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #keepAlive(): void {
    if (this.#timer !== undefined) return;
    const timer = setInterval(() => this.send(": keep-alive\n\n"), KEEPALIVE_MS);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }
}

/**
 * Formats one Server-Sent Event with a JSON payload.
 *
 * @param event The event name (`snapshot`, `round`, `site`).
 * @param data The payload, serialised as JSON (which never holds a raw newline).
 * @returns The event's text, ending with the blank line that delimits it.
 */
export function format(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
