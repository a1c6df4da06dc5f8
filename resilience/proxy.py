"""A TCP proxy that delays what the upstream answers: a slow dependency put in front of it, not
simulated inside the service under test.

    python -m resilience.proxy LISTEN_PORT UPSTREAM_HOST:PORT --delay-file PATH

Each connection is forwarded both ways; every chunk coming back from the upstream is held for the
delay (milliseconds, read from `--delay-file` at most every 0.2 s; absent or empty: none) before it is
passed on, in order. The delay is per round trip, as a far or overloaded server adds it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

REREAD_S = 0.2


class Delay:
    """The current delay in seconds, from a file that may change while the proxy runs."""

    def __init__(self, path: Path) -> None:
        self.path, self._value, self._read_at = path, 0.0, float("-inf")

    def seconds(self) -> float:
        now = time.monotonic()
        if now - self._read_at >= REREAD_S:
            self._read_at = now
            try:
                text = self.path.read_text().strip()
                self._value = float(text) / 1000 if text else 0.0
            except (OSError, ValueError):
                self._value = 0.0
        return self._value


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay | None) -> None:
    """Copy until EOF; with a delay, each chunk leaves `delay` after it arrived (order kept)."""
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while True:
            due, data = await chunks.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(release())
    try:
        while data := await reader.read(65536):
            await chunks.put((time.monotonic() + (delay.seconds() if delay else 0.0), data))
    finally:
        await chunks.put((0.0, b""))
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def serve(listen_port: int, upstream: tuple[str, int], delay: Delay) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, upstream_writer, None),
            _pipe(upstream_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("listen_port", type=int)
    parser.add_argument("upstream", help="HOST:PORT")
    parser.add_argument("--delay-file", type=Path, required=True)
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    asyncio.run(serve(args.listen_port, (host, int(port)), Delay(args.delay_file)))


if __name__ == "__main__":
    main()
