// The round benchmark on Node.js `net` with msgpackr: a peer baseline.
// Same scenario and output as bench/round.ts:
//   node bench/peers/node_round.mjs server PORT N SIZE ROUNDS
//   node bench/peers/node_round.mjs client PORT N
// Frames are a 4-byte big-endian length and a msgpackr body; TCP_NODELAY is on.
import net from "node:net";
import { Packr } from "msgpackr";

const [role, portArg, clientsArg, sizeArg = "0", roundsArg = "0"] = process.argv.slice(2);
const port = Number(portArg);
const clients = Number(clientsArg);
const size = Number(sizeArg);
const rounds = Number(roundsArg);
// moreTypes: typed arrays travel as typed arrays. pack() returns a view of a
// buffer the next pack() reuses, so each socket gets its own Packr (one message
// in flight per socket per round).
const newPackr = () => new Packr({ moreTypes: true });
const packr = newPackr();

/** Calls onFrame(body) for every whole frame received on the socket. */
function frames(socket, onFrame) {
  let pending = Buffer.alloc(0);
  let body = null;
  let filled = 0;
  socket.on("data", (chunk) => {
    let offset = 0;
    while (offset < chunk.length) {
      if (body !== null) {
        const take = Math.min(body.length - filled, chunk.length - offset);
        chunk.copy(body, filled, offset, offset + take);
        filled += take;
        offset += take;
        if (filled === body.length) {
          const done = body;
          body = null;
          onFrame(done);
        }
        continue;
      }
      pending = pending.length
        ? Buffer.concat([pending, chunk.subarray(offset)])
        : chunk.subarray(offset);
      offset = chunk.length;
      while (pending.length >= 4) {
        const length = pending.readUInt32BE(0);
        if (pending.length - 4 >= length) {
          onFrame(pending.subarray(4, 4 + length));
          pending = pending.subarray(4 + length);
        } else {
          body = Buffer.allocUnsafe(length);
          filled = pending.length - 4;
          pending.copy(body, 0, 4);
          pending = Buffer.alloc(0);
          break;
        }
      }
    }
  });
}

function send(socket, body) {
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(body.length);
  socket.cork();
  socket.write(header);
  socket.write(body);
  socket.uncork();
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

if (role === "server") {
  const sockets = [];
  const waiting = [];
  let received = 0;
  let onAll = null;
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const index = sockets.length;
    sockets.push(socket);
    frames(socket, (body) => {
      const reply = packr.unpack(body);
      waiting[index] = reply;
      if (++received === clients) onAll();
    });
    if (sockets.length === clients) start();
  });
  server.listen(port, "127.0.0.1");
  async function start() {
    const weights = new Float32Array(size / 4).fill(0.5);
    const warmup = size >= 1 << 20 ? 2 : rounds;
    const times = [];
    for (let round = -warmup; round < rounds; round++) {
      const t0 = performance.now();
      received = 0;
      const all = new Promise((resolve) => (onAll = resolve));
      const body = packr.pack({ round, weights });
      for (const socket of sockets) send(socket, body);
      await all;
      for (const reply of waiting) {
        if (reply.round !== round || reply.weights.length !== weights.length) {
          throw new Error(`Bad reply in round ${round}`);
        }
      }
      if (round >= 0) times.push((performance.now() - t0) / 1000);
    }
    const m = median(times);
    console.log(JSON.stringify({
      impl: "node-net-msgpackr",
      bench: "round",
      clients,
      size,
      rounds,
      median_round_s: Number(m.toPrecision(4)),
      gbps: Number(((2 * clients * size) / m / 1e9).toPrecision(4)),
    }));
    for (const socket of sockets) socket.destroy();
    server.close();
  }
} else {
  let open = 0;
  const connectOne = (id) =>
    new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.setNoDelay(true);
      socket.once("connect", () => resolve(socket));
      socket.once("error", reject);
    }).then((socket) => {
      open++;
      const own = newPackr();
      frames(socket, (body) => {
        const { round, weights } = own.unpack(body);
        send(socket, own.pack({ id, round, weights }));
      });
      socket.on("close", () => --open === 0 && process.exit(0));
      socket.on("error", () => {});
    });
  for (let id = 0; id < clients; id++) {
    for (let attempt = 0;; attempt++) {
      try {
        await connectOne(id);
        break;
      } catch (error) {
        if (attempt > 400) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }
}
