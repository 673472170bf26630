"""Identifiers shaped like the real service's: a prefix plus 21 URL-safe characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """Return ``prefix`` followed by 21 random alphanumeric characters (e.g. ``item_…``)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(21))
