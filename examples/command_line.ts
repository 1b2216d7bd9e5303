/**
 * What the command-line examples and `cli.ts` share: flag parsing with
 * `node:util` `parseArgs` that fails with one clear line, validators for
 * ports, counts and durations, where the output goes, and one-line
 * explanations of the errors a network program meets.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** An invalid command line: shown as `error: <message>` with a hint, exit code 2. */
export class UsageError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong with the command line, in sentence case.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Where a command writes: normal lines to `out`, diagnostics to `err`. */
export interface Output {
  /** Writes one line of results (stdout). */
  out(line: string): void;
  /** Writes one line of diagnostics (stderr). */
  err(line: string): void;
}

/** The process's stdout and stderr. */
export const CONSOLE: Output = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

/**
 * Rewrites a `parseArgs` error (or an error carrying its message) as a
 * {@linkcode UsageError} with one short sentence: `Unknown flag: --nope`,
 * `Missing value for --port`, `Unexpected argument: "x"`.
 *
 * @param error What `parseArgs` threw.
 * @returns The usage error.
 */
export function toUsageError(error: unknown): UsageError {
  const message = (error instanceof Error ? error.message : String(error)).split("\n")[0];
  const flag = message.match(/'(-[^' <]+)/)?.[1];
  const flagName = message.match(/'(?:-\w, )?(--[^' <]+)/)?.[1] ?? flag;
  if (/^Unknown option /.test(message) && flag) return new UsageError(`Unknown flag: ${flag}`);
  if (/^Unexpected argument /.test(message)) {
    const argument = message.match(/argument '([^']*)'/)?.[1] ?? "";
    return new UsageError(`Unexpected argument: "${argument}"`);
  }
  if (/^Option /.test(message) && flagName) {
    if (message.includes("does not take an argument")) {
      return new UsageError(`Flag ${flagName} takes no value`);
    }
    return new UsageError(`Missing value for ${flagName}`);
  }
  return new UsageError(message);
}

/**
 * Parses a command line strictly: an unknown flag, a missing value or an
 * unexpected argument throws a {@linkcode UsageError} with one short line.
 *
 * @param config The `parseArgs` configuration (leave `strict` at its default, `true`).
 * @returns What `parseArgs` returns.
 * @throws {UsageError} If the command line does not fit `config`.
 */
export function parseFlags<T extends ParseArgsConfig>(
  config: T,
): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    throw toUsageError(error);
  }
}

/**
 * Reads an integer flag.
 *
 * @param name The flag, without dashes, for the error message.
 * @param text The value given, or `undefined`.
 * @param fallback The value when the flag is absent.
 * @param min The smallest value allowed.
 * @param max The largest value allowed (default `Number.MAX_SAFE_INTEGER`).
 * @returns The integer.
 * @throws {UsageError} If `text` is not an integer from `min` to `max`.
 */
export function integerFlag(
  name: string,
  text: string | undefined,
  fallback: number,
  min: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (text.trim() === "" || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`Invalid --${name}: "${text}" is not an integer ${range}`);
  }
  return value;
}

/**
 * Reads a TCP or UDP port flag (0 lets the system choose where that makes sense).
 *
 * @param text The value given, or `undefined`.
 * @param min 0 for a listening side that may take any free port, 1 for a connecting side.
 * @returns The port.
 * @throws {UsageError} If the flag is missing or not a port number.
 */
export function portFlag(text: string | undefined, min: 0 | 1): number {
  if (text === undefined) throw new UsageError("Missing flag: --port");
  return integerFlag("port", text, 0, min, 65_535);
}

/**
 * Reads a duration flag given in seconds, as milliseconds.
 *
 * @param name The flag, without dashes, for the error message.
 * @param text The value given, or `undefined`.
 * @param fallbackSeconds The value when the flag is absent.
 * @returns Milliseconds.
 * @throws {UsageError} If `text` is not a positive number.
 */
export function secondsFlag(
  name: string,
  text: string | undefined,
  fallbackSeconds: number,
): number {
  if (text === undefined) return fallbackSeconds * 1000;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value <= 0) {
    throw new UsageError(`Invalid --${name}: "${text}" is not a positive number of seconds`);
  }
  return value * 1000;
}

/** A network address, as given on a command line. */
export interface Address {
  /** The host name or IP address (without brackets for IPv6). */
  readonly hostname: string;
  /** The port. */
  readonly port: number;
}

/**
 * Reads `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (for 127.0.0.1).
 *
 * @param text The address given.
 * @returns The host and port.
 * @throws {UsageError} If it has no valid port.
 */
export function parseAddress(text: string): Address {
  const match = text.match(/^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port < 1 || port > 65_535) {
    throw new UsageError(`Invalid address: "${text}" is not HOST:PORT`);
  }
  return { hostname: match[1] ?? (match[2] || "127.0.0.1"), port };
}

/**
 * Formats an address for messages: `127.0.0.1:7000`, `[::1]:7000`.
 *
 * @param address The host and port.
 * @returns The address as text.
 */
export function formatAddress(address: Address): string {
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}

/**
 * The reason part of an operating-system error message: `"No such file or
 * directory"` from `"No such file or directory (os error 2): open '/x'"`.
 *
 * @param error The error.
 * @returns The reason, in one line.
 */
export function osReason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n")[0].replace(/ \(os error \d+\).*$/, "");
}

/**
 * Explains a failure in one line, naming the address for network errors.
 *
 * @param error What was thrown.
 * @param address The peer or the listening address, if there is one.
 * @returns The explanation, without the `error: ` prefix.
 */
export function describeError(error: unknown, address?: Address): string {
  const where = address ? formatAddress(address) : "the address";
  if (error instanceof Deno.errors.ConnectionRefused) {
    return `Nothing listening at ${where}: connection refused`;
  }
  if (error instanceof Deno.errors.AddrInUse) return `Cannot listen on ${where}: address in use`;
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return `Cannot listen on ${where}: address not available`;
  }
  if (error instanceof Deno.errors.ConnectionReset) return `Connection to ${where} was reset`;
  if (error instanceof Deno.errors.PermissionDenied) return osReason(error);
  if (error instanceof Error) return error.message.split("\n")[0];
  return String(error);
}

/**
 * Shows a received value in one line: strings quoted, other values inspected.
 *
 * @param value A decoded MessagePack value.
 * @returns Its one-line form.
 */
export function show(value: unknown): string {
  return typeof value === "string"
    ? JSON.stringify(value)
    : Deno.inspect(value, { compact: true, breakLength: Infinity, colors: false });
}

/**
 * Reports a failed command in one line on `output.err` and returns its exit
 * code: 2 with a hint for a {@linkcode UsageError}, 1 for anything else.
 *
 * @param error What was thrown.
 * @param output Where to report.
 * @param helpCommand The command that shows the usage, for the hint.
 * @param address The address involved, for network errors.
 * @returns The exit code.
 */
export function reportFailure(
  error: unknown,
  output: Output,
  helpCommand: string,
  address?: Address,
): number {
  if (error instanceof UsageError) {
    output.err(`error: ${error.message}`);
    output.err(`hint: run "${helpCommand}"`);
    return 2;
  }
  output.err(`error: ${describeError(error, address)}`);
  return 1;
}
