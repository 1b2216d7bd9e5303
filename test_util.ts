/**
 * Helpers shared by the tests (not published).
 *
 * @module
 */

/**
 * Concatenates byte chunks into one array.
 *
 * @param chunks The chunks, in order.
 * @returns Their bytes, contiguous.
 */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
