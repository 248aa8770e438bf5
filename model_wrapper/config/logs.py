"""Logging for the wrapper process: text or JSON lines, the model in every line, secrets masked.

Configured once by `model_wrapper.server` before anything else logs.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.contract.redaction import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(model)s v%(model_version)s] %(message)s"


class ModelContext(logging.Filter):
    """Stamps the model on every record and masks any secret or credential-shaped value that reached a message."""

    def __init__(self, model: str, version: str, secrets: list[str]) -> None:
        super().__init__()
        self.model, self.version, self.secrets = model, version, secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.model, record.model_version = self.model, self.version
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
        message = record.getMessage()
        masked = redact(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(settings: WrapperSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(model)s %(model_version)s",
                                           rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ModelContext(settings.model_name, settings.model_version, settings.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
