"""Helpers for tests that drive asyncio tasks step by step."""

import asyncio


async def settle() -> None:
    """Let every ready task run until it waits on something (no time passes, no timer fires)."""
    for _ in range(10):
        await asyncio.sleep(0)
