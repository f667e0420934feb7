"""Who may run code here: the caller must send the sandbox's access token (`X-Access-Token`, which the SDK sends
with every `/execute`). Sandbox ports are reachable by anyone who knows the sandbox id, so without this check the
sandbox id alone would let anyone run code as the sandbox's user.

The service never learns the token: envd publishes its SHA-512 (`soulbox_protocol::access_token_file`) and
rewrites it when the token changes; an empty file means the sandbox has no token (envd lets everyone in too).
The file is read per request, so a token changed by a resume applies at once."""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional

DIGEST_PATH = "/run/soulbox/access-token.sha512"


def _published_digest() -> Optional[str]:
    """The published digest, "" without a token, None when envd published nothing (refuse: fail closed)."""
    try:
        with open(DIGEST_PATH, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeError):
        return None


def refusal(token: Optional[str]) -> Optional[tuple[int, str]]:
    """None when `token` may run code, else (status, message)."""
    digest = _published_digest()
    if digest is None:
        return 503, "the sandbox's access token is not available to the code interpreter yet"
    if digest == "":
        return None
    offered = hashlib.sha512((token or "").encode("utf-8")).hexdigest()
    if token and hmac.compare_digest(offered, digest):
        return None
    return 401, "unauthorized: a valid X-Access-Token is required"
