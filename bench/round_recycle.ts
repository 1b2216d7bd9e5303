/**
 * The round benchmark with recycled memory: `round.ts` with
 * `FEDCOMM_RECYCLE=1`, for the `recycle` column of `bench/run.ts`. The
 * server gives each reply's memory back once it checked it
 * (`server.recycle`), each client once its echo was acknowledged
 * (`client.recycle`), so that large rounds read into the same memory every
 * round instead of fresh memory.
 *
 * @module
 */

Deno.env.set("FEDCOMM_RECYCLE", "1");
await import("./round.ts");
