"""The REST gateway: the seed's JSON routes in front of the analytics gRPC server.

``create_app(settings)`` builds the FastAPI app; ``serve(settings)`` runs it.
"""

from gateway.app import create_app
from gateway.main import serve
from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app", "serve"]
