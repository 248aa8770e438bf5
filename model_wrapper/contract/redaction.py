"""The one redactor: what must never reach a log line, a tag, a termination message or an HTTP error.

Shared by the watcher (`watcher.config.logs`), the wrapper's logs and its evaluation Job. It masks the
secrets it is given (longest first), the `user:password@` part of URLs, and the value of anything shaped
like `password=…`, `token: …` or `access_key_id=…`: text from elsewhere (a pod's log tail, a server's
error) may carry a credential nobody registered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_USERINFO = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
_CREDENTIAL = re.compile(r"(?i)((?:secret|password|passwd|token|api[_-]?keys?|access[_-]?key(?:[_-]id)?)[\w-]*"
                         r"[\"']?\s*[=:]\s*[\"']?)[^\s\"';,]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets, URL user-info and credential-shaped values replaced by `***`."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _CREDENTIAL.sub(r"\1***", _USERINFO.sub("***@", text))
