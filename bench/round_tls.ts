/**
 * The round benchmark over TLS: `round.ts` with `FEDCOMM_TLS=1` (the test-only
 * certificates in `testdata/tls/`), for the `tls` column of `bench/run.ts`.
 *
 * @module
 */

Deno.env.set("FEDCOMM_TLS", "1");
await import("./round.ts");
