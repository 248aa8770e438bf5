"""Registered-model names as DNS-1035 labels (Kubernetes object names and URL slugs).

Shared by the watcher (object names, Ingress path) and the wrapper (its URL prefix), so both
always agree on `/<slug>/api/`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_SLUG = 63
_DIGEST_CHARS = 8
_HASHED = re.compile(rf"-[0-9a-f]{{{_DIGEST_CHARS}}}$")


def model_slug(name: str) -> str:
    """A stable, collision-free DNS-1035 label for a registered-model name.

    A name that already is a valid label is used as it is; any other name is reduced
    (ASCII, lower case, runs of other characters to '-') and gets a short hash of the
    exact original, so "Iris Model" and "iris-model" never share a slug. A name that ends
    like a hash suffix is hashed too: used as it is, it could be another name's slug.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"m-{base}".rstrip("-")
    if base == name and len(base) <= MAX_SLUG and not _HASHED.search(name):
        return base
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{base[: MAX_SLUG - _DIGEST_CHARS - 1].rstrip('-')}-{digest}"
