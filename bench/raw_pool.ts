/**
 * The raw-bytes round with pooled buffers: `raw.ts` with `RAW_POOL=1`, for
 * the `raw-pool` column of `bench/run.ts`: every frame is read into a buffer
 * kept from the previous round of that connection, not a fresh one.
 *
 * @module
 */

Deno.env.set("RAW_POOL", "1");
await import("./raw.ts");
