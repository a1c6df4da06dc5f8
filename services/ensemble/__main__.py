"""`python -m services.ensemble`: serve the ensemble on PCAM_ENSEMBLE_HOST:PCAM_ENSEMBLE_PORT."""

from services.common.serve import serve
from services.ensemble.settings import EnsembleSettings

serve("services.ensemble.app:create_app", EnsembleSettings())
