"""Logging set-up (text or one JSON object per line) and the redaction every message passes through.

Secrets registered here (S3 keys, API token, webhook secret) never reach a log line, a tag or an
error message: `redact` replaces them with the shared redactor (`model_wrapper.contract.redaction`), which
also masks URL user-info and anything shaped like `password=…` or `token: …`. Inside
`about(model, version)` every line carries the model's name and version as fields.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from model_wrapper.contract.redaction import redact as shared_redact

_secrets: set[str] = set()
_subject: ContextVar[tuple[str, int | None] | None] = ContextVar("watcher_log_subject", default=None)
# Registry content (names, messages) must not start a log line of its own, nor drive a terminal.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember values that must never be printed (short ones are ignored: they would mask words)."""
    _secrets.update(v for v in values if v and len(v) >= 6)


def redact(text: str) -> str:
    """`text` safe to log or tag: the registered secrets and anything credential-shaped masked."""
    return shared_redact(text, _secrets)


@contextmanager
def about(model: str, version: int | None) -> Iterator[None]:
    """Every log line inside, whichever module writes it, carries `model` and `version` (JSON fields)."""
    token = _subject.set((model, version))
    try:
        yield
    finally:
        _subject.reset(token)


class _SubjectFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        subject = _subject.get()
        if subject is not None and not hasattr(record, "model"):
            record.model, record.version = subject
        return True


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), redact(message))
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    logging.captureWarnings(True)  # library warnings go through the same (JSON, redacted) handler
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.addFilter(_SubjectFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "boto3", "kubernetes", "mlflow", "alembic", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
