"""The request id a wrapper gives an answer when the caller sent none: 32 hex digits, as a UUID's, never the
same twice in one process, nor across processes (pods, restarts, workers). A caller's own id is echoed."""

from __future__ import annotations

import re
import subprocess
import sys

from model_wrapper.http.predict_endpoint import _request_id

PRINT_IDS = ("from model_wrapper.http.predict_endpoint import _request_id\n"
             "for _ in range(3): print(_request_id({'headers': []}).decode())")


def test_a_generated_id_is_32_hex_digits_and_new_for_every_request() -> None:
    ids = [_request_id({"headers": [(b"accept", b"*/*")]}) for _ in range(10_000)]

    assert len(set(ids)) == len(ids) and all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)


def test_two_processes_never_generate_the_same_id() -> None:
    runs = [subprocess.run([sys.executable, "-c", PRINT_IDS], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]

    assert len(runs[0]) == len(runs[1]) == 3 and not set(runs[0]) & set(runs[1])


def test_a_caller_s_printable_id_is_echoed_and_anything_else_replaced() -> None:
    assert _request_id({"headers": [(b"x-request-id", b"caller-42")]}) == b"caller-42"
    assert _request_id({"headers": [(b"x-request-id", b"bad id\n")]}) != b"bad id\n"
