"""In-memory stand-ins for Redis and a clock (the integration suite runs a real redis-server), and
settings whose dependencies are unreachable."""

import asyncio
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from devstack.ports import free_port
from services.gateway.settings import GatewaySettings


class FakeRedis:
    """The few commands the gateway uses; `down = True` makes every call fail like a dead server."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.expiry: dict[str, int] = {}
        self.down = False
        self.calls = 0
        self.mgets: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # when set up, MGETs wait for it

    def _touch(self) -> None:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._touch()
        self.mgets.append(list(keys))
        if self.gate is not None:
            await self.gate.wait()
        return [self.store.get(k) for k in keys]

    async def ping(self) -> bool:
        self._touch()
        return True

    async def aclose(self) -> None:
        pass

    def pipeline(self, transaction: bool = True) -> "FakePipeline":
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.ops = redis, []

    async def __aenter__(self) -> "FakePipeline":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def set(self, key: str, value: str, ex: int) -> None:
        self.ops.append(("set", key, value, ex))

    def incr(self, key: str) -> None:
        self.ops.append(("incr", key))

    def expire(self, key: str, seconds: int) -> None:
        self.ops.append(("expire", key, seconds))

    async def execute(self) -> list[Any]:
        self.redis._touch()
        results: list[Any] = []
        for op, key, *args in self.ops:
            if op == "set":
                self.redis.store[key] = args[0].encode()
                self.redis.expiry[key] = args[1]
                results.append(True)
            elif op == "incr":
                value = int(self.redis.store.get(key, b"0")) + 1
                self.redis.store[key] = str(value).encode()
                results.append(value)
            else:
                self.redis.expiry[key] = args[0]
                results.append(True)
        return results


class Clock:
    """A settable clock for breakers and rate limiters."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def unreachable_settings(**changes: object) -> GatewaySettings:
    """Gateway settings whose preprocess, ensemble and Redis are free ports nobody listens on."""
    dead = f"http://127.0.0.1:{free_port()}"
    return GatewaySettings(
        preprocess_url=dead, ensemble_url=dead, redis_url=f"redis://127.0.0.1:{free_port()}/0", **changes
    )
