"""`python -m services.gateway`: serve the gateway on PCAM_GATEWAY_HOST:PCAM_GATEWAY_PORT."""

from services.common.serve import serve
from services.gateway.settings import GatewaySettings

serve("services.gateway.app:create_app", GatewaySettings())
