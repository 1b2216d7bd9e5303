/**
 * Memory for small received bodies: they share 64 KiB slabs, 8-byte
 * aligned, instead of one allocation each.
 *
 * @module
 */

/** Small received bodies share slabs of this size. */
const SLAB_BYTES = 64 * 1024;
/** The largest body copied into a slab; larger ones get their own buffer. */
const SLAB_MAX_BODY = 4 * 1024;

/** The slab small received bodies are copied into, shared by all connections, and its fill. */
let slab = new Uint8Array(SLAB_BYTES);
let slabPos = 0;

/**
 * Copies a small body out of a read buffer. Bodies up to 4 KiB share 64 KiB
 * slabs with every connection of the process (8-byte aligned, so tensors
 * stay aligned views), which saves an allocation per small message; larger
 * ones get their own buffer.
 *
 * @param body A view into a read buffer.
 * @returns The same bytes in memory of their own.
 */
export function own(body: Uint8Array): Uint8Array {
  const n = body.byteLength;
  if (n > SLAB_MAX_BODY) return body.slice();
  const at = ownAt(body);
  return slab.subarray(at, at + n);
}

/**
 * Copies a body of at most 4 KiB into the current slab, without making a
 * view of it: for a caller that keeps many and views few.
 *
 * @param body At most 4 KiB.
 * @returns Its offset in {@linkcode currentSlab}, read before the next copy.
 */
export function ownAt(body: Uint8Array): number {
  const n = body.byteLength;
  if (slabPos + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES);
    slabPos = 0;
  }
  const at = slabPos;
  slab.set(body, at);
  slabPos += (n + 7) & ~7;
  return at;
}

/**
 * The slab {@linkcode ownAt} copied into last.
 *
 * @returns The slab.
 */
export function currentSlab(): Uint8Array {
  return slab;
}

/** The largest body {@linkcode ownAt} takes. */
export const SLAB_MAX_BODY_BYTES: number = SLAB_MAX_BODY;
