"""Runtime images, in the spirit of KServe's ServingRuntimes: which wrapper image serves a version.

`RUNTIME_IMAGES` maps an MLflow flavour or a package to an image (on the local target: a Python
interpreter). The watcher reads the version's `MLmodel` flavours and `requirements.txt` (see
`watcher.clients.artifacts`) and `pick_runtime` chooses; pure functions, called by settings and render.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

PYFUNC = "python_function"
"""Every model has this flavour: it says nothing about the library the model needs."""


def parse_runtime_images(text: str) -> dict[str, str]:
    """`xgboost=reg/img-gbm:1,pytorch=reg/img-torch:1` as {key: image}; ValueError naming a bad entry."""
    images: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        key, separator, image = (item.strip() for item in entry.partition("="))
        if not separator or not key or not image or not re.fullmatch(r"[A-Za-z0-9._-]+", key):
            raise ValueError(f"{entry!r} is not FLAVOUR_OR_PACKAGE=IMAGE (e.g. xgboost=reg.example/wrapper-gbm:1)")
        images[normal(key)] = image
    return images


def normal(name: str) -> str:
    """Flavours and package names compare as PyPI compares names (`sentence_transformers` = `sentence-transformers`)."""
    return str(canonicalize_name(name))


def needs(flavours: Sequence[str], requirements: str | None) -> tuple[str, ...]:
    """What a version may need a runtime for, in the order of preference: its flavours, then its packages."""
    names = [normal(flavour) for flavour in flavours if flavour != PYFUNC]
    for line in (requirements or "").splitlines():
        text = line.split("#")[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            names.append(normal(Requirement(text).name))
        except InvalidRequirement:
            continue
    return tuple(dict.fromkeys(names))


def pick_runtime(images: Mapping[str, str], wanted: Sequence[str]) -> str | None:
    """The key of the first runtime that serves one of `wanted` (flavours first), or None for the default."""
    return next((name for name in wanted if name in images), None)
