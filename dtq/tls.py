"""TLS for gRPC: the server's credentials (optionally requiring client
certificates, mTLS) and the clients' (the CA that signed the server's
certificate, optionally a client certificate). Files are PEM."""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """Serve with `cert`/`key`; with `client_ca`, every client must present a
    certificate it signed."""
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))],
        root_certificates=_read(client_ca) if client_ca else None,
        require_client_auth=bool(client_ca),
    )


def channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """Trust servers `ca` signed; present `cert`/`key` when given (mTLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(key) if cert and key else None,
        certificate_chain=_read(cert) if cert and key else None,
    )
