"""TLS in the Envoy config: on the listener (Envoy terminates TLS for REST
and gRPC clients) and towards the servers (Envoy checks their certificate
against a CA, and that it names the backend's host)."""

from __future__ import annotations

import ipaddress
from typing import Any

TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_TYPES = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def downstream(cert: str, key: str) -> dict[str, Any]:
    """The listener's transport socket: serve `cert`/`key` (PEM files), HTTP/2
    or HTTP/1.1 by ALPN."""
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": TLS_TYPES + "DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [
                    {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}
                ],
                "alpn_protocols": ["h2", "http/1.1"],
            },
        },
    }


def _san(host: str) -> dict[str, Any]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"san_type": "DNS", "matcher": {"exact": host}}
    return {"san_type": "IP_ADDRESS", "matcher": {"exact": host}}


def upstream(ca: str, hosts: list[str]) -> dict[str, Any]:
    """The cluster's transport socket: TLS to the servers, trusting `ca`, and
    requiring a certificate that names one of `hosts`."""
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": TLS_TYPES + "UpstreamTlsContext",
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": ca},
                    "match_typed_subject_alt_names": [_san(h) for h in dict.fromkeys(hosts)],
                },
                "alpn_protocols": ["h2"],
            },
        },
    }
