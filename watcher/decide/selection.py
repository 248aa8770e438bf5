"""Which tags and aliases only nearly match the selector: the same but for case or surrounding spaces.

Pure; called by the registry client (classifying what one search found) and the webhook receiver (deciding
whether an event is worth a pass). A near miss is told on the version, never deployed.
"""

from __future__ import annotations

from collections.abc import Mapping

from watcher.decide.types import Selector


def near_miss(selector: Selector, tags: Mapping[str, str]) -> str | None:
    """The tag on a version the selector does not pick that looks meant for it (`Deploy=production`,
    `deploy= Production`), described for a person, else None."""
    if selector.kind != "tag" or tags.get(selector.key) == selector.value:
        return None
    return next((f"the tag {key!r} = {value!r}" for key, value in sorted(tags.items())
                 if _loose(key) == _loose(selector.key) and _loose(value) == _loose(selector.value)), None)


def names_loosely(selector: Selector, key: str) -> bool:
    """Whether a tag key or alias name is the selector's own, but for case and surrounding spaces."""
    return selector.kind in ("tag", "alias") and _loose(key) == _loose(selector.key)


def what_it_expects(selector: Selector) -> str:
    if selector.kind == "tag":
        return f"the tag {selector.key!r} = {selector.value!r} exactly"
    if selector.kind == "alias":
        return f"the alias {selector.key!r} exactly"
    return f"the stage {selector.key!r}"


def _loose(text: str) -> str:
    return text.strip().casefold()
