"""`python -m services.common.healthcheck <service>`: exit 0 iff the service's /healthz answers 200.

The container HEALTHCHECK of every service image (docker/services.Dockerfile): slim images have no curl,
and this reads the port from the service's own settings class, so `PCAM_<SERVICE>_PORT` moves the probe
with the server. Liveness only (/healthz): readiness (/readyz) depends on other services and belongs to
`depends_on`/readiness probes, not to restarting this container.
"""

from __future__ import annotations

import importlib
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from services.common.settings import ServiceSettings

TIMEOUT_S = 2.0
SETTINGS = {
    "gateway": "services.gateway.settings:GatewaySettings",
    "preprocess": "services.preprocess.settings:PreprocessSettings",
    "ensemble": "services.ensemble.settings:EnsembleSettings",
}
# A server listening on every address is probed on loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def settings_of(service: str) -> ServiceSettings:
    """The service's settings as the server reads them (from `PCAM_<SERVICE>_*`)."""
    module, _, name = SETTINGS[service].partition(":")
    return getattr(importlib.import_module(module), name)()


def healthz_url(settings: ServiceSettings) -> str:
    host = _WILDCARDS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthz"


def check(url: str, timeout_s: float = TIMEOUT_S) -> bool:
    """Whether GET `url` answers 200 within `timeout_s`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in SETTINGS:
        print(f"usage: python -m services.common.healthcheck {{{','.join(SETTINGS)}}}", file=sys.stderr)
        return 2
    url = healthz_url(settings_of(args[0]))
    healthy = check(url)
    if not healthy:
        print(f"unhealthy: GET {url} did not answer 200 within {TIMEOUT_S:.0f}s", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
