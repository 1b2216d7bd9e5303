/**
 * What a failed TLS setup means, in fedcomm's errors: the one place where
 * Deno's TLS errors (rustls' text) are translated, and where a peer that
 * speaks TLS to a plain end, or plain to a TLS end, is recognised.
 *
 * @module
 */

import {
  AuthenticationError,
  FrameTooLargeError,
  PeerDisconnectedError,
  ProtocolError,
  TimeoutError,
} from "../errors.ts";

/**
 * Whether a frame header's 4-byte length is really the start of a TLS record
 * (content type 20–23: change cipher spec, alert, handshake, data; version
 * 3.x). Before the welcome no frame is near that size (hundreds of MB), so a
 * header like this is a peer speaking TLS.
 *
 * @param length The length read from a frame header.
 * @returns Whether it is a TLS record header.
 */
export function isTlsRecord(length: number): boolean {
  const type = length >>> 24;
  return type >= 0x14 && type <= 0x17 && (length >>> 16 & 0xff) === 3;
}

/**
 * Whether a handshake's error is a TLS record where a fedcomm frame was due.
 *
 * @param error The error reading the first frame.
 * @returns Whether the peer speaks TLS.
 */
export function spokeTls(error: unknown): boolean {
  return error instanceof FrameTooLargeError && isTlsRecord(error.length);
}

/**
 * The error a plain client raises when the server answered its hello with TLS.
 *
 * @param where The server's `host:port`.
 * @param cause The frame error.
 * @returns A `ProtocolError` naming the fix.
 */
export function serverSpeaksTls(where: string, cause: unknown): ProtocolError {
  return new ProtocolError(
    `Server speaks TLS: pass tls to connect() (with tls.caCerts for a private CA): ${where} ` +
      "answered with a TLS record, not a fedcomm frame",
    { cause },
  );
}

/**
 * Translates an error of a client's TLS handshake.
 *
 * @param error What `startTls` or `handshake()` threw (or the deadline's error).
 * @param where The server's `host:port`.
 * @param name The name the certificate was checked against.
 * @returns `AuthenticationError` for a certificate this client does not
 * accept, `PeerDisconnectedError` when the server closed the connection (a
 * server that does not speak TLS does), `TimeoutError` unchanged but for its
 * detail, `ProtocolError` otherwise.
 */
export function clientTlsError(error: unknown, where: string, name: string): Error {
  if (error instanceof TimeoutError) {
    return new TimeoutError(`${error.message}: no answer to the TLS handshake`, {
      clientIds: error.clientIds,
      cause: error,
    });
  }
  const detail = error instanceof Error ? error.message : String(error);
  if (error instanceof Deno.errors.InvalidData && detail.includes("invalid peer certificate")) {
    const fix = detail.includes("UnknownIssuer")
      ? ": not signed by a CA this client trusts: pass its CA in tls.caCerts"
      : detail.includes("not valid for name")
      ? ": connect with a name the certificate carries, or set tls.hostname"
      : "";
    return new AuthenticationError(
      `TLS certificate verification failed for ${where} (as "${name}"): ${detail}${fix}`,
      { cause: error },
    );
  }
  if (
    error instanceof Deno.errors.UnexpectedEof || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe || detail.includes("corrupt message")
  ) {
    return new PeerDisconnectedError(
      `Server closed the connection during the TLS handshake: ${where}: it may not speak TLS ` +
        `(connect without tls if it does not): ${detail}`,
      { cause: error },
    );
  }
  return new ProtocolError(`TLS handshake failed with ${where}: ${detail}`, { cause: error });
}
