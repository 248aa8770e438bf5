"""Secrets that arrive as mounted files (Kubernetes Secret volumes), for the watcher's and the wrapper's settings.

`read_secret_file` backs the `*_FILE` settings (API_KEYS_FILE, WEBHOOK_SECRET_FILE); the values in
the AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE, which boto3 reads itself) are
listed so that logs can redact them like any other secret.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

MAX_SECRET_BYTES = 64 * 1024
_AWS_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def read_secret_file(path: Path, variable: str) -> str:
    """The file's text without its final newline; ValueError naming `variable` when it cannot be used."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{variable}: cannot read {path} ({e.strerror or type(e).__name__})") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"{variable}: {path} is larger than {MAX_SECRET_BYTES} bytes; is it the right file?")
    try:
        text = data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"{variable}: {path} is not UTF-8 text") from None
    if not text.strip():
        raise ValueError(f"{variable}: {path} is empty")
    return text


def aws_credential_values(environ: dict[str, str] | None = None) -> list[str]:
    """The keys in the AWS shared credentials file boto3 will read (empty when there is none or it is unreadable)."""
    env = os.environ if environ is None else environ
    path = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or Path(env.get("HOME", "~")).expanduser() / ".aws/credentials")
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return []
    return [parser[section][key] for section in parser.sections() for key in _AWS_KEYS
            if parser[section].get(key)]
