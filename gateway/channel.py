"""The gateway's one gRPC channel to the analytics server: over TLS when
``grpc_ca`` names the trust root of the server's certificate, else plaintext."""

import grpc

from gateway.settings import GatewaySettings

__all__ = ["MAX_MESSAGE_BYTES", "open_channel"]

# As large as the server sends (dashboards of many campaigns).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def open_channel(settings: GatewaySettings) -> grpc.aio.Channel:
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # When the server is back, be back within a few seconds: gRPC's own
        # reconnect backoff grows to 2 minutes, answering 503 all the while.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if settings.grpc_ca is None:
        return grpc.aio.insecure_channel(settings.grpc_target, options=options)
    try:
        root = settings.grpc_ca.read_bytes()
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the gRPC server's trust root {settings.grpc_ca}: {exc.strerror or exc}"
        ) from None
    if settings.grpc_server_name:
        options.append(("grpc.ssl_target_name_override", settings.grpc_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.aio.secure_channel(settings.grpc_target, credentials, options=options)
