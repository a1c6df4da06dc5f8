"""`python -m services.preprocess`: serve the preprocess on PCAM_PREPROCESS_HOST:PCAM_PREPROCESS_PORT."""

import os

# Set before numba starts its OpenMP pool: idle OpenMP threads otherwise spin after each kernel, CPU
# that does no work (0.24 -> 0.20 ms of CPU per normalized patch here, docs/benchmarks.md) and that a
# pod's CPU limit throttles. The environment can still choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from services.common.serve import serve  # noqa: E402
from services.preprocess.settings import PreprocessSettings  # noqa: E402

serve("services.preprocess.app:create_app", PreprocessSettings())
