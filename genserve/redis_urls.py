"""Redis URLs as operators write them, made to work the same in every client genserve uses.

`redis://:PASSWORD@host:6379/0` needs nothing: Celery's broker (kombu), Celery's result
backend, redis-py's `from_url` (the gateway's publisher and result listener, the workers'
lease keeper and stream sink) all read the password from the URL.

`rediss://` (TLS) does not: redis-py verifies the server's certificate by default, Celery's
result backend refuses a rediss:// URL without `ssl_cert_reqs`, and kombu's broker silently
falls back to NOT verifying the certificate. `tls_options` turns the URL's query
(`?ssl_cert_reqs=required&ssl_ca_certs=/certs/ca.crt&ssl_certfile=...&ssl_keyfile=...`) into
the dict Celery's `broker_use_ssl` / `redis_backend_use_ssl` take, verifying by default, so
all three agree.
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlparse

CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
TLS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def tls_options(url: str | None) -> dict[str, object] | None:
    """Celery's TLS dict for a rediss:// URL (certificate verified unless ssl_cert_reqs=none); None otherwise."""
    if not url or urlparse(url).scheme != "rediss":
        return None
    query = {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}
    reqs = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, got {query['ssl_cert_reqs']!r}")
    options: dict[str, object] = {"ssl_cert_reqs": CERT_REQS[reqs]}
    options.update({key: query[key] for key in TLS_KEYS if key in query})
    return options
