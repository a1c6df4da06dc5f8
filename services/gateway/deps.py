"""The gateway's dependencies: the lifespan's objects for routes, and authentication with rate limits."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from pcam_core.errors import InvalidCredentials, NotAuthenticated
from pcam_core.problems import PROBLEM_TYPES
from services.gateway.auth import ApiKeys
from services.gateway.cache import ResultCache
from services.gateway.downstream import Downstream
from services.gateway.metrics import AUTH_FAILURES
from services.gateway.predict import Predictor
from services.gateway.ratelimit import RateLimiter
from services.gateway.settings import GatewaySettings

API_KEY_HEADER = "X-API-Key"


# Dependencies are `async def` although they only read app state: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop per dependency per request (docs/benchmarks.md).
async def _cache(request: Request) -> ResultCache:
    return request.app.state.cache


async def _downstream(request: Request) -> Downstream:
    return request.app.state.downstream


Cache = Annotated[ResultCache, Depends(_cache)]
Services = Annotated[Downstream, Depends(_downstream)]


def predictor(request: Request) -> Predictor:
    """The lifespan's predictor. The prediction routes call this rather than declaring a dependency:
    solving each dependency costs FastAPI tens of microseconds per request, on the hottest path."""
    return request.app.state.predictor


def _limiter(request: Request) -> RateLimiter | None:
    return request.app.state.limiter


def guard(keys: ApiKeys) -> Callable[..., Awaitable[None]]:
    """The dependency of every /v1 route: authenticate (when keys are set), then rate limit the client."""
    if keys.enabled:
        api_key_scheme = APIKeyHeader(
            name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey", description="An API key."
        )
        bearer_scheme = HTTPBearer(
            auto_error=False, scheme_name="Bearer", description="The same API key as a bearer token."
        )

        async def authenticated(
            request: Request,
            api_key: Annotated[str | None, Security(api_key_scheme)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
        ) -> None:
            """Authenticate, then count the request against its key's rate limit."""
            limits = _limiter(request)
            try:
                client = "key:" + keys.authenticate(api_key, bearer.credentials if bearer else None)
            except (NotAuthenticated, InvalidCredentials) as error:
                AUTH_FAILURES.labels(error.kind).inc()
                if limits is not None:  # failed attempts count too: guessing keys is rate limited
                    await limits.admit("unauthenticated:" + _address(request), request.state)
                raise
            if limits is not None:
                await limits.admit(client, request.state)

        return authenticated

    async def admitted(request: Request) -> None:
        """Count the request against its client's rate limit; without keys, clients are told apart by
        address (the proxy's, behind a proxy)."""
        limits = _limiter(request)
        if limits is not None:
            await limits.admit("ip:" + _address(request), request.state)

    return admitted


def guarded_statuses(settings: GatewaySettings, keys: ApiKeys) -> tuple[int, ...]:
    """The statuses the guard may answer with these settings: documented only when they can happen."""
    kinds = (
        ("unauthorized", keys.enabled),
        ("forbidden", keys.enabled),
        ("rate-limited", bool(settings.rate_limit_per_minute)),
    )
    return tuple(PROBLEM_TYPES[kind].status for kind, on in kinds if on)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
