"""Limits the services and the offline tools must agree on, defined once (defaults of their settings)."""

from typing import Final

MAX_IMAGE_BYTES: Final = 1 << 20
"""Bytes per uploaded image: gateway and preprocess refuse larger uploads, `pcam predict` larger files."""
MAX_IMAGES_PER_REQUEST: Final = 256
"""Images per upload request to the gateway and to preprocess."""
RELEASE_POLL_S: Final = 2.0
"""How often preprocess and the ensemble look for a new release.json."""
MAX_EXPLAIN_IMAGES: Final = 16
"""Images per request with explain, at the gateway and at the ensemble (occlusion costs 121 passes each)."""
