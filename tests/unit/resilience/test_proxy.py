"""The delaying TCP proxy: bytes pass intact and in order both ways; the delay comes from its file."""

import asyncio

from devstack.ports import free_port
from resilience.proxy import Delay, serve


def test_the_delay_is_read_from_its_file_and_missing_or_garbage_means_none(tmp_path) -> None:
    path = tmp_path / "delay-ms"
    assert Delay(path).seconds() == 0.0
    path.write_text("250")
    assert Delay(path).seconds() == 0.25
    path.write_text("soon")
    assert Delay(path).seconds() == 0.0


async def test_bytes_pass_both_ways_intact_and_in_order(tmp_path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    (tmp_path / "delay-ms").write_text("20")
    listen = free_port()
    proxy = asyncio.create_task(serve(listen, ("127.0.0.1", upstream_port), Delay(tmp_path / "delay-ms")))
    try:
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", listen)
                break
            except OSError:
                await asyncio.sleep(0.01)
        chunks = [f"chunk-{i};".encode() for i in range(20)]
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        expected = b"".join(chunks).upper()
        received = b""
        while len(received) < len(expected):
            received += await asyncio.wait_for(reader.read(4096), 10)
        assert received == expected
        writer.close()
    finally:
        proxy.cancel()
        upstream.close()
        await asyncio.gather(proxy, return_exceptions=True)
