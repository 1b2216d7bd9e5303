/**
 * Text of the MessagePack reader (`decoder.ts`): UTF-8 strings, key hashes
 * and the words of its error messages.
 *
 * @module
 */

/** ASCII strings up to this long are built without TextDecoder. */
const SHORT_STRING = 32;
/** Invalid UTF-8 becomes U+FFFD; a leading BOM is kept (it is part of the string). */
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const charCodes: number[] = []; // scratch for short strings

/** FNV-1a of `bytes[from..to)`. */
export function hashBytes(bytes: Uint8Array, from: number, to: number): number {
  let hash = 0x811c9dc5;
  for (let i = from; i < to; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return hash;
}

/**
 * Decodes UTF-8 bytes: short ASCII by hand, anything else with TextDecoder,
 * which replaces each invalid sequence with U+FFFD.
 */
export function text(bytes: Uint8Array, pos: number, length: number): string {
  if (length > SHORT_STRING) return utf8.decode(bytes.subarray(pos, pos + length));
  charCodes.length = length;
  for (let i = 0; i < length; i++) {
    const c = bytes[pos + i];
    if (c >= 0x80) return utf8.decode(bytes.subarray(pos, pos + length));
    charCodes[i] = c;
  }
  return String.fromCharCode.apply(null, charCodes);
}

/** The MessagePack type of a head byte that cannot start a map key. */
export function keyType(head: number): string {
  if (head === 0xc0) return "nil";
  if (head === 0xc2 || head === 0xc3) return "bool";
  if (head < 0x90 || head === 0xde || head === 0xdf) return "map";
  if (head < 0xa0 || head === 0xdc || head === 0xdd) return "array";
  return "ext";
}

/** `text` with its first letter in lower case. */
export function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
