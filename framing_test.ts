import assert from "node:assert/strict";
import { concat } from "./tests/test_util.ts";
import { encode } from "./codec.ts";
import { ProtocolError } from "./errors.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameDecoderStream,
  FrameEncoderStream,
  FrameReader,
  MAX_FRAME_BYTES_LIMIT,
  MessagePackDecoderStream,
  MessagePackEncoderStream,
} from "./framing.ts";
import { checkMaxFrameBytes } from "./_wire/frame.ts";

// ---------------------------------------------------------------------------
// Helpers

/** One frame: the 4-byte big-endian length, then the body. */
function frame(body: Uint8Array | number[]): Uint8Array {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  const out = new Uint8Array(4 + bytes.byteLength);
  new DataView(out.buffer).setUint32(0, bytes.byteLength);
  out.set(bytes, 4);
  return out;
}

/** Bytes 0, 1, 2, … (mod 251) so that misplaced bytes show. */
function pattern(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i + seed) % 251;
  return out;
}

/** Runs chunks through a decoder and collects the bodies. */
function decodeFrames(chunks: Uint8Array[], maxFrameBytes?: number): Promise<Uint8Array[]> {
  return Array.fromAsync(
    ReadableStream.from(chunks).pipeThrough(new FrameDecoderStream({ maxFrameBytes })),
  );
}

/** A readable byte stream (`type: "bytes"`) that hands out `chunks`, then closes. */
function byteStream(chunks: Uint8Array[], close = true): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++].slice());
      else if (close) {
        controller.close();
        // A pending BYOB read is released only by responding with zero bytes.
        controller.byobRequest?.respond(0);
      }
    },
  });
}

/** Cuts `bytes` into chunks of `size`. */
function split(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks = [];
  for (let i = 0; i < bytes.byteLength; i += size) chunks.push(bytes.slice(i, i + size));
  return chunks;
}

// ---------------------------------------------------------------------------
// maxFrameBytes

Deno.test("checkMaxFrameBytes() validates the limit", () => {
  assert.equal(checkMaxFrameBytes(undefined), DEFAULT_MAX_FRAME_BYTES);
  assert.equal(checkMaxFrameBytes(0), 0);
  assert.equal(checkMaxFrameBytes(MAX_FRAME_BYTES_LIMIT), 2 ** 32 - 1);
  for (const bad of [-1, 2 ** 32, 1.5, NaN, Infinity]) {
    assert.throws(() => checkMaxFrameBytes(bad), RangeError, String(bad));
    assert.throws(() => new FrameDecoderStream({ maxFrameBytes: bad }), RangeError);
    assert.throws(() => new FrameEncoderStream({ maxFrameBytes: bad }), RangeError);
    assert.throws(
      () => new FrameReader(ReadableStream.from([]), { maxFrameBytes: bad }),
      RangeError,
    );
  }
  const reader = new FrameReader(ReadableStream.from([]));
  assert.throws(() => reader.maxFrameBytes = -1, RangeError);
  reader.maxFrameBytes = 10;
  assert.equal(reader.maxFrameBytes, 10);
});

// ---------------------------------------------------------------------------
// FrameEncoderStream

Deno.test("FrameEncoderStream() prefixes each body with its big-endian length", async () => {
  const bodies = [new Uint8Array([7, 8]), new Uint8Array(0), pattern(300)];
  const out = await Array.fromAsync(
    ReadableStream.from(bodies).pipeThrough(new FrameEncoderStream()),
  );
  assert.deepStrictEqual(out[0], new Uint8Array([0, 0, 0, 2, 7, 8]));
  assert.deepStrictEqual(out[1], new Uint8Array([0, 0, 0, 0]));
  assert.deepStrictEqual(out[2], frame(pattern(300)));
  assert.equal(out.length, 3);
});

Deno.test("FrameEncoderStream() passes a large body through uncopied after its header", async () => {
  const body = pattern(200_000);
  const out = await Array.fromAsync(
    ReadableStream.from([body]).pipeThrough(new FrameEncoderStream()),
  );
  assert.equal(out.length, 2);
  assert.deepStrictEqual(out[0], new Uint8Array([0, 3, 0x0d, 0x40]));
  assert.equal(out[1], body);
});

Deno.test("FrameEncoderStream() errors with RangeError for a body over maxFrameBytes", async () => {
  const stream = ReadableStream.from([new Uint8Array(4), new Uint8Array(5)])
    .pipeThrough(new FrameEncoderStream({ maxFrameBytes: 4 }));
  const reader = stream.getReader();
  assert.deepStrictEqual((await reader.read()).value, frame([0, 0, 0, 0]));
  await assert.rejects(reader.read(), RangeError);
});

// ---------------------------------------------------------------------------
// FrameDecoderStream

Deno.test("FrameDecoderStream() cuts many frames out of one chunk", async () => {
  const bodies = [pattern(1), pattern(0), pattern(1000, 3), pattern(70_000, 5), pattern(4)];
  const out = await decodeFrames([concat(bodies.map(frame))]);
  assert.deepStrictEqual(out, bodies);
});

Deno.test("FrameDecoderStream() joins a frame split into 1-byte chunks", async () => {
  const bodies = [pattern(10), pattern(0), pattern(300, 9)];
  const out = await decodeFrames(split(concat(bodies.map(frame)), 1));
  assert.deepStrictEqual(out, bodies);
});

Deno.test("FrameDecoderStream() joins a header split in two and a body split across chunks", async () => {
  const body = pattern(100);
  const bytes = concat([frame(body), frame([42])]);
  for (let cut = 1; cut < bytes.byteLength; cut++) {
    const out = await decodeFrames([bytes.slice(0, cut), bytes.slice(cut)]);
    assert.deepStrictEqual(out, [body, new Uint8Array([42])], `cut at ${cut}`);
  }
  // Every chunk size at once, so frames start mid-chunk too.
  const many = [pattern(5), pattern(17, 1), pattern(0), pattern(64, 2), pattern(3, 3)];
  const all = concat(many.map(frame));
  for (let size = 1; size <= 13; size++) {
    assert.deepStrictEqual(await decodeFrames(split(all, size)), many, `chunks of ${size}`);
  }
});

Deno.test("FrameDecoderStream() yields a heartbeat as an empty body", async () => {
  const out = await decodeFrames([new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 9, 0, 0, 0, 0])]);
  assert.deepStrictEqual(out, [new Uint8Array(0), new Uint8Array([9]), new Uint8Array(0)]);
  const split = await decodeFrames([new Uint8Array([0, 0]), new Uint8Array([0, 0])]);
  assert.deepStrictEqual(split, [new Uint8Array(0)]);
});

Deno.test("FrameDecoderStream() errors with RangeError on an oversized header before its body", async () => {
  const decoder = new FrameDecoderStream({ maxFrameBytes: 1024 });
  const writer = decoder.writable.getWriter();
  const reader = decoder.readable.getReader();
  // Only the header of a 1025-byte frame: the body never comes.
  const written = writer.write(new Uint8Array([0, 0, 4, 1]));
  await assert.rejects(reader.read(), (error) => {
    assert.ok(error instanceof RangeError);
    assert.match(error.message, /^Frame too large: 1025 bytes exceeds maxFrameBytes 1024/);
    return true;
  });
  await assert.rejects(written, RangeError);
  // The same header split in two is caught too.
  const split = new FrameDecoderStream({ maxFrameBytes: 1024 });
  const splitWriter = split.writable.getWriter();
  const splitReader = split.readable.getReader();
  const read = splitReader.read(); // a pending read lets the transform run
  await splitWriter.write(new Uint8Array([0xff, 0xff]));
  const second = splitWriter.write(new Uint8Array([0xff, 0xff]));
  await assert.rejects(read, RangeError);
  await assert.rejects(second, RangeError);
  // At the limit is fine.
  assert.deepStrictEqual(await decodeFrames([frame(pattern(1024))], 1024), [pattern(1024)]);
});

Deno.test("FrameDecoderStream() errors with ProtocolError when the input ends inside a frame", async () => {
  await assert.rejects(
    decodeFrames([concat([frame([1]), new Uint8Array([0, 0, 0, 10, 1, 2, 3])])]),
    (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.message, "Truncated frame: expected 10 bytes, received 3");
      return true;
    },
  );
  await assert.rejects(
    decodeFrames([new Uint8Array([0, 0, 1])]),
    (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.message, "Truncated frame: expected 4 header bytes, received 3");
      return true;
    },
  );
  await assert.rejects(
    decodeFrames([new Uint8Array([0, 0, 0, 5])]),
    /expected 5 bytes, received 0/,
  );
});

// ---------------------------------------------------------------------------
// MessagePack streams

Deno.test("MessagePackEncoderStream() and MessagePackDecoderStream() carry values through frames", async () => {
  const values = [
    { round: 1, weights: new Float32Array([0.5, 1.5]) },
    "text",
    [1, [2, 3]],
    null,
    new Uint8Array([1, 2, 3]),
    { big: new Float64Array(20_000).fill(0.25) },
  ];
  const frames = await Array.fromAsync(
    ReadableStream.from(values)
      .pipeThrough(new MessagePackEncoderStream())
      .pipeThrough(new FrameEncoderStream()),
  );
  // Re-chunk the byte stream arbitrarily before decoding.
  const chunks = split(concat(frames), 777);
  const out = await Array.fromAsync(
    ReadableStream.from(chunks)
      .pipeThrough(new FrameDecoderStream())
      .pipeThrough(new MessagePackDecoderStream()),
  );
  assert.deepStrictEqual(out, values);
});

Deno.test("MessagePackDecoderStream() skips heartbeats", async () => {
  const bodies = [new Uint8Array(0), encode({ a: 1 }), new Uint8Array(0), encode(2)];
  const out = await Array.fromAsync(
    ReadableStream.from(bodies).pipeThrough(new MessagePackDecoderStream()),
  );
  assert.deepStrictEqual(out, [{ a: 1 }, 2]);
});

Deno.test("MessagePackDecoderStream() errors with ProtocolError for a malformed body", async () => {
  const bodies = [encode(1), new Uint8Array([0xc1])];
  await assert.rejects(
    Array.fromAsync(ReadableStream.from(bodies).pipeThrough(new MessagePackDecoderStream())),
    ProtocolError,
  );
});

Deno.test("MessagePackEncoderStream() errors with TypeError for a value with no MessagePack form", async () => {
  await assert.rejects(
    Array.fromAsync(ReadableStream.from([() => 1]).pipeThrough(new MessagePackEncoderStream())),
    TypeError,
  );
});

// ---------------------------------------------------------------------------
// FrameReader

Deno.test("FrameReader() reads frames from a default stream in any chunking", async () => {
  const bodies = [pattern(3), pattern(0), pattern(300_000, 1), pattern(1, 2), pattern(65_536, 3)];
  const bytes = concat(bodies.map(frame));
  for (const size of [1, 3, 4096, 100_000, bytes.byteLength]) {
    const reader = new FrameReader(ReadableStream.from(split(bytes, size)));
    for (const body of bodies) {
      assert.deepStrictEqual(await reader.read(), body, `chunks of ${size}`);
    }
    assert.equal(await reader.read(), null);
  }
});

Deno.test("FrameReader() reads small and 3 MiB frames from a byte stream", async () => {
  const large = pattern(3 * 1024 * 1024, 7);
  const bodies = [pattern(10), pattern(0), large, pattern(200_000, 1), pattern(1, 2)];
  const bytes = concat(bodies.map(frame));
  for (const size of [1 << 16, 5000, bytes.byteLength]) {
    let counted = 0;
    const reader = new FrameReader(byteStream(split(bytes, size)), {
      onBytes: (n) => counted += n,
    });
    for (const body of bodies) {
      const got = await reader.read();
      assert.ok(got !== null);
      assert.equal(got.byteLength, body.byteLength);
      assert.deepStrictEqual(got, body, `chunks of ${size}`);
    }
    assert.equal(await reader.read(), null);
    assert.equal(counted, bytes.byteLength);
  }
});

Deno.test("FrameReader() reads frames of every size around its read buffer's sizes", async () => {
  // The read buffer starts at 4 KiB and grows to 64 KiB; larger frames get their own buffer.
  const sizes = [0, 1, 4091, 4092, 4093, 8188, 8189, 20_000, 65_531, 65_532, 65_533, 70_000];
  const bodies = [...sizes, ...sizes.toReversed()].map((n, i) => pattern(n, i));
  const bytes = concat(bodies.map(frame));
  for (const size of [1, 3000, 4096, 65_536, bytes.byteLength]) {
    const reader = new FrameReader(byteStream(split(bytes, size)));
    for (const body of bodies) {
      assert.deepStrictEqual(await reader.read(), body, `chunks of ${size}`);
    }
    assert.equal(await reader.read(), null);
  }
});

Deno.test("FrameReader() throws RangeError for an oversized header before the body arrives", async () => {
  // A byte stream that never ends after the header.
  const bytes = new FrameReader(byteStream([frame([1]), new Uint8Array([0, 1, 0, 1])], false), {
    maxFrameBytes: 65_536,
  });
  assert.deepStrictEqual(await bytes.read(), new Uint8Array([1]));
  await assert.rejects(bytes.read(), (error) => {
    assert.ok(error instanceof RangeError);
    assert.equal(error.message, "Frame too large: 65537 bytes exceeds maxFrameBytes 65536");
    return true;
  });
  await bytes.cancel();
  // A default (non-byte) stream that never ends after the header.
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  const written = writer.write(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
  const reader = new FrameReader(readable, { maxFrameBytes: 100 });
  await assert.rejects(reader.read(), RangeError);
  await written;
  await reader.cancel();
});

Deno.test("FrameReader() throws ProtocolError when the stream ends inside a frame", async () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0, 0, 0, 10, 1, 2, 3]), "Truncated frame: expected 10 bytes, received 3"],
    [new Uint8Array([0, 0]), "Truncated frame: expected 4 header bytes, received 2"],
    [
      concat([new Uint8Array([0, 0x40, 0, 0]), pattern(1000)]),
      "Truncated frame: expected 4194304 bytes, received 1000",
    ],
  ];
  for (const [bytes, message] of cases) {
    for (const stream of [byteStream([bytes]), ReadableStream.from([bytes])]) {
      const reader = new FrameReader(stream);
      await assert.rejects(reader.read(), (error) => {
        assert.ok(error instanceof ProtocolError);
        assert.equal(error.message, message);
        return true;
      });
    }
  }
});

Deno.test("FrameReader() reads small and 3 MiB frames from a TCP connection", async () => {
  const large = pattern(3 * 1024 * 1024, 11);
  const bodies = [pattern(5), pattern(0), large, pattern(70_000, 1), pattern(2, 2)];
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // Through the conn's readable byte stream, and through the conn's own read().
  for (const source of ["readable", "conn"]) {
    const [server, client] = await Promise.all([
      listener.accept(),
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    ]);
    try {
      const writing = (async () => {
        const writer = client.writable.getWriter();
        for (const body of bodies) await writer.write(frame(body));
        await writer.close(); // closes the client's end
      })();
      const reader = new FrameReader(source === "conn" ? server : server.readable);
      for (const body of bodies) {
        const got = await reader.read();
        assert.ok(got !== null);
        assert.equal(got.byteLength, body.byteLength, source);
        assert.deepStrictEqual(got, body, source);
      }
      assert.equal(await reader.read(), null);
      await writing;
    } finally {
      for (const conn of [server, client]) {
        try {
          conn.close();
        } catch {
          // Closed already when its stream ended.
        }
      }
    }
  }
});

Deno.test("FrameReader.readSpace() offers more while reads fill it, up to 4 KiB, and readDone() counts them", async () => {
  // 2,000 frames of 10 bytes: a source that always has more than it is offered.
  const frames = concat(Array.from({ length: 2_000 }, (_, i) => frame(new Uint8Array(10).fill(i))));
  let at = 0;
  const source = {
    read(p: Uint8Array): Promise<number | null> {
      if (at >= frames.byteLength) return Promise.resolve(null);
      const n = Math.min(p.byteLength, frames.byteLength - at);
      p.set(frames.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
  const reader = new FrameReader(source);
  const offered: number[] = [];
  let count = 0;
  while (true) {
    let body = reader.readBuffered();
    while (body !== undefined) {
      assert.deepStrictEqual(body, new Uint8Array(10).fill(count++));
      body = reader.readBuffered();
    }
    const space = reader.readSpace()!;
    offered.push(space.byteLength);
    if (!reader.readDone(await source.read(space))) break;
  }
  assert.equal(count, 2_000);
  // The buffer doubles after each read that filled it (less what a cut frame
  // kept at its front), then stays at 4 KiB.
  const sizes = offered.map((n) => 2 ** Math.ceil(Math.log2(n)));
  assert.deepStrictEqual(sizes.slice(0, 5), [256, 512, 1024, 2048, 4096]);
  assert.ok(offered.every((n) => n <= 4096), `offered ${Math.max(...offered)}`);
  assert.ok(offered.length < 10 + frames.byteLength / 4000, `${offered.length} reads`);
});
