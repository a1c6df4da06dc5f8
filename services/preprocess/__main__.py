"""`python -m services.preprocess`: serve the preprocess on PCAM_PREPROCESS_HOST:PCAM_PREPROCESS_PORT."""

from services.common.serve import serve
from services.preprocess.settings import PreprocessSettings

serve("services.preprocess.app:create_app", PreprocessSettings())
