"""Default local ports of every process in the stack (docs/architecture.md#default-ports); env vars override."""

from typing import Final

GATEWAY: Final = 8080
PREPROCESS: Final = 8081
ENSEMBLE: Final = 8082
TRITON_HTTP: Final = 8000
TRITON_GRPC: Final = 8001
TRITON_METRICS: Final = 8002
REDIS: Final = 6379
