"""The round benchmark on Python asyncio streams with pickle: a peer baseline.

Same scenario and output as bench/round.ts:
    python3 bench/peers/python_round.py server PORT N SIZE ROUNDS
    python3 bench/peers/python_round.py client PORT N
Frames are a 4-byte big-endian length and a pickle (protocol 5) body; asyncio
sets TCP_NODELAY on its TCP sockets.
"""
import asyncio
import json
import pickle
import statistics
import struct
import sys
import time

import numpy as np


async def read_frame(reader):
    header = await reader.readexactly(4)
    return await reader.readexactly(struct.unpack(">I", header)[0])


def write_frame(writer, body):
    writer.write(struct.pack(">I", len(body)))
    writer.write(body)


async def server(port, clients, size, rounds):
    joined = []
    ready = asyncio.Event()

    async def on_connect(reader, writer):
        joined.append((reader, writer))
        if len(joined) == clients:
            ready.set()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", port, backlog=clients)
    await ready.wait()
    weights = np.full(size // 4, 0.5, dtype=np.float32)
    warmup = 2 if size >= 1 << 20 else rounds
    times = []
    for round_ in range(-warmup, rounds):
        start = time.perf_counter()
        body = pickle.dumps({"round": round_, "weights": weights}, protocol=5)
        for _, writer in joined:
            write_frame(writer, body)
        await asyncio.gather(*(writer.drain() for _, writer in joined))
        replies = await asyncio.gather(*(read_frame(reader) for reader, _ in joined))
        for reply in map(pickle.loads, replies):
            if reply["round"] != round_ or len(reply["weights"]) != len(weights):
                raise RuntimeError(f"Bad reply in round {round_}")
        if round_ >= 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({
        "impl": "python-asyncio-pickle",
        "bench": "round",
        "clients": clients,
        "size": size,
        "rounds": rounds,
        "median_round_s": float(f"{median:.4g}"),
        "gbps": float(f"{2 * clients * size / median / 1e9:.4g}"),
    }), flush=True)
    for _, writer in joined:
        writer.close()
    listener.close()


async def client(port, clients):
    async def one(id_):
        for attempt in range(400):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("Server not listening")
        return id_, reader, writer

    async def serve(id_, reader, writer):
        try:
            while True:
                message = pickle.loads(await read_frame(reader))
                reply = {"id": id_, "round": message["round"], "weights": message["weights"]}
                write_frame(writer, pickle.dumps(reply, protocol=5))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    connections = [await one(i) for i in range(clients)]
    await asyncio.gather(*(serve(*c) for c in connections))


def main():
    role, port, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if role == "server":
        asyncio.run(server(port, clients, int(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(client(port, clients))


if __name__ == "__main__":
    main()
