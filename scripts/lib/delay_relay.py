#!/usr/bin/env python3
"""TCP relays that make Kafka brokers slow at Produce but otherwise reachable,
for scripts/storm.

    delay_relay.py DELAY_S HOST:PORT...

Listens on a free port of 127.0.0.1 for each HOST:PORT and relays every
connection to it, reading the Kafka frames both ways (a 4-byte length, then
for a request its api key, version and correlation id, for a response the
correlation id). While the relays are slow (SIGUSR1; SIGUSR2 makes them fast
again) a Produce response is held DELAY_S seconds from the moment it came
from the broker; every other answer (ApiVersions, Metadata...) passes at
once, as from a broker whose disk is slow. Frames keep their order on a
connection (one never overtakes another received before it) and no
connection is closed by the relay: a late answer arrives. Prints "ready" and
the ports, in the order of the arguments, on one line of stdout once every
port listens.
"""
import asyncio
import signal
import struct
import sys

if len(sys.argv) < 3:
    raise SystemExit(__doc__)
DELAY_S = float(sys.argv[1])
TARGETS = []
for arg in sys.argv[2:]:
    host, _, port = arg.rpartition(":")
    TARGETS.append((host, int(port)))

PRODUCE = 0
state = {"delay": 0.0}


async def frames(reader):
    """Yields whole Kafka frames (length prefix included) until EOF."""
    while True:
        try:
            head = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack(">i", head)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        yield head + body


async def requests(reader, writer, api_of):
    """Client to broker, at once; remembers each request's api key."""
    try:
        async for frame in frames(reader):
            if len(frame) >= 12:
                api_key, _version, correlation_id = struct.unpack(">hhi", frame[4:12])
                api_of[correlation_id] = api_key
            writer.write(frame)
            await writer.drain()
    finally:
        writer.close()


async def responses(reader, writer, api_of):
    """Broker to client; Produce responses held while slow, order kept."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def send():
        while True:
            due, frame = await queue.get()
            if frame is None:
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(frame)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        async for frame in frames(reader):
            correlation_id = struct.unpack(">i", frame[4:8])[0] if len(frame) >= 8 else None
            delay = state["delay"] if api_of.pop(correlation_id, None) == PRODUCE else 0.0
            queue.put_nowait((loop.time() + delay, frame))
    finally:
        queue.put_nowait((0.0, None))
        try:
            await sender
        finally:
            writer.close()


def handler(host, port):
    async def handle(client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        api_of = {}
        await asyncio.gather(requests(client_reader, broker_writer, api_of),
                             responses(broker_reader, client_writer, api_of), return_exceptions=True)
    return handle


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: state.update(delay=DELAY_S))
    loop.add_signal_handler(signal.SIGUSR2, lambda: state.update(delay=0.0))
    servers = [await asyncio.start_server(handler(h, p), "127.0.0.1", 0) for h, p in TARGETS]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("ready", *ports, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
