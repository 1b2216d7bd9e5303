/**
 * The protocol test vectors of a session (`testdata/vectors/protocol_v3.json`):
 * the messages and replies, the acks, the pings and pongs, the close frames
 * and the heartbeat, each written by the library as the server or the client
 * and decoded by the public decoders (how: `protocol_vectors.ts`).
 *
 * @module
 */

import { isHandshakeCase, vectors } from "./protocol_vectors.ts";
import { testCases } from "./protocol_vectors_cases.ts";

testCases(vectors.cases.filter((c) => !isHandshakeCase(c)));
