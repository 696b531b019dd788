"""TLS for the gRPC server, from PEM files (``serve --tls-cert --tls-key``)."""

from pathlib import Path

import grpc

from server.errors import ServiceError


def read_pem(path: Path, what: str) -> bytes:
    """The PEM file's bytes; a clear error when it cannot be read or is no PEM."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServiceError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ServiceError(f"the TLS {what} {path} is not in PEM format (-----BEGIN ...)")
    return data


def add_port(server: grpc.aio.Server, address: str, cert: Path | None, key: Path | None) -> int:
    """Listens on ``address``, over TLS when a certificate and key are given;
    returns the bound port (0: could not bind)."""
    if cert is None or key is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(read_pem(key, "private key"), read_pem(cert, "certificate"))]
    )
    return server.add_secure_port(address, credentials)
