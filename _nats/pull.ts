/**
 * One pull of the next message from a durable consumer, that can be
 * stopped: the root pulls while it reads partial aggregates, and stops the
 * pull when the round ends. A stopped pull's inbox has no subscriber any
 * more, and NATS delivers a message only to a pull request whose reply
 * subject has one, so the message stays in the stream for the next round.
 *
 * @module
 */

import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";

/** One pull, under way until {@linkcode Pull.done}. */
export class Pull {
  /** The message pulled, or `null` (none before the pull expired, or stopped). */
  message: JsMsg | null = null;
  /** Whether the pull failed (NATS away): try again after a pause. */
  failed = false;
  /** Whether it is over. */
  done = false;
  /** Resolves (never rejects) when it is over. */
  readonly settled: Promise<void>;
  #messages: ConsumerMessages | undefined;
  #stopped = false;

  /**
   * Starts pulling one message.
   *
   * @param consumer The durable consumer.
   * @param expires Milliseconds the server holds the request (at least 1,000).
   */
  constructor(consumer: Consumer, expires: number) {
    this.settled = this.#run(consumer, expires);
  }

  async #run(consumer: Consumer, expires: number): Promise<void> {
    try {
      const messages = await consumer.fetch({ max_messages: 1, expires });
      this.#messages = messages;
      if (this.#stopped) messages.stop();
      for await (const message of messages) {
        this.message = message;
        break;
      }
    } catch {
      this.failed = true;
    } finally {
      this.done = true;
    }
  }

  /** Stops the pull: it is over at once, with no message unless one had come. */
  stop(): void {
    this.#stopped = true;
    this.#messages?.stop();
  }
}
