"""Secrets masked wherever they appear in a value shown to people (`sift config`): a URL's
password, sensitive query parameters, keys of a mapping that name a secret."""

from __future__ import annotations

import re

# Query parameters whose value is a secret (matched as a part of the name: db_password, x-api-key).
_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|api[-_]?key|apikey|key|auth|credential|signature|sig", re.I)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"']+")


def mask_secrets(value: object) -> object:
    """value with every URL's password and secret query parameters masked (strings, lists, dicts)."""
    if isinstance(value, str):
        return _URL.sub(lambda m: _mask_url(m.group(0)), value)
    if isinstance(value, dict):
        return {k: "********" if _SECRET_PARAMS.search(str(k)) else mask_secrets(v) for k, v in value.items()}
    return [mask_secrets(v) for v in value] if isinstance(value, list | tuple) else value


def _mask_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    creds = authority.rsplit("@", 1)[0] if "@" in authority else ""
    if ":" in creds:
        rest = rest.replace(f"{creds}@", f"{creds.split(':', 1)[0]}:********@", 1)
    hide = lambda m: f"{m[1]}{m[2]}=********" if _SECRET_PARAMS.search(m[2]) and m[3] else m[0]  # noqa: E731
    return f"{scheme}://" + re.sub(r"([?&;])([^=&#]+)=([^&#;]*)", hide, rest)
