"""The inference log, serving side: which requests are sampled, and handing their records to the writer process.

Created by `model_wrapper.server` with the command that starts the writer (`python -m model_wrapper
log-writer`, `model_wrapper.predict.log_writer`), attached to the model once it is loaded, fed by the predict
endpoint (`model_wrapper.http.predict_endpoint`). On the event loop a sampled request costs its entry
appended to a list. Every FLUSH_RECORDS entries, or FLUSH_SECONDS after the first, the list is encoded as
one frame (`to_frame`), and the frames go down a pipe to the writer with a write that never blocks. A
frame per request cost each request four to five times what the same code costs in a loop (17 to 20 us
at one instance, measured in a running wrapper); a frame per flush costs it about 8 us, its share of the
flush included. The table, the Parquet file and the upload happen in the writer process, not on this
interpreter: as a thread here they took the interpreter from the event loop for longer than the requests
they logged (BENCHMARKS.md).

Never slows or fails a request: a buffer holding INFERENCE_LOG_QUEUE records (the writer is behind) or
a writer that is gone drops records, counted, and a writer that died is started again. The writer's own
counts (written, dropped, write errors) come back as lines on its stdout, into `counters`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import logging
import os
import random
import select
import subprocess
import threading
import time
from collections.abc import Sequence

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.predict.inference_records import Entry, Frames, Layout, frame, to_frame
from model_wrapper.predict.log_writer import Counters, NoCounters
from model_wrapper.predict.predictor import LoadedModel

log = logging.getLogger(__name__)
FLUSH_RECORDS = 100
"""Entries encoded and sent in one go: in a running wrapper, about half a millisecond of the event loop at one
instance a request, one at a hundred."""
FLUSH_SECONDS = 0.2
PIPE_BYTES = 1024 * 1024
"""The pipe's capacity (Linux allows an unprivileged process up to 1 MiB): a second of a busy wrapper's
records can wait there while the writer encodes a file."""
RESTART_SECONDS = 5.0
"""A writer that died is started again at most this often: one that cannot start does not loop."""


class InferenceLog:
    """Samples the requests of one served model version and sends their records to its writer process."""

    def __init__(self, settings: WrapperSettings, *, writer: Sequence[str]) -> None:
        """`writer` is the command that starts the writer process (`model_wrapper.server` gives it)."""
        self.sample = 0.0
        """Set by `attach`: nothing is sampled before the model (and its contract) is loaded."""
        self.counters: Counters = NoCounters()
        self._settings = settings
        self._command = list(writer)
        self._hello = b""
        self._entries: list[Entry] = []
        """Sampled and not encoded yet."""
        self._frames = Frames()
        self._buffer = self._frames.buffer
        self._framed: list[tuple[int, int]] = []
        """Each frame in the buffer, not yet wholly in the pipe: where it ends, and the records it holds."""
        self._flush_due = False
        self._lock = threading.Lock()  # the event loop adds and flushes; `close` runs in another thread
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe = -1
        self._started = -RESTART_SECONDS
        self._closed = False

    def attach(self, model: LoadedModel) -> None:
        """Start logging for the loaded model: its contract's sample and `log: false` fields."""
        contract = model.contract
        sample = contract.logging.sample if contract.logging is not None else self._settings.inference_log_sample
        if not contract.inputs or sample <= 0:
            return
        layout = Layout.of(self._settings.model_name, self._settings.model_version, contract,
                           model.backend.columns, model.backend.classes)
        self._hello = frame((self._settings, layout))
        with self._lock:
            if self._closed:  # SIGTERM came while the model loaded
                return
            self._start_writer()
        self.sample = sample
        log.info("model %s version %s: inference log on, sample %s", self._settings.model_name,
                 self._settings.model_version, self.sample)

    def sampled(self) -> bool:
        """Whether this request is logged (decided before predicting, so an unlogged one costs nothing)."""
        sample = self.sample
        return sample > 0 and (sample >= 1 or random.random() < sample)  # noqa: S311 - a sample, not a secret

    def add(self, entry: Entry) -> None:
        """Keep the entry for the next flush (on the event loop: no system call unless a flush is due)."""
        with self._lock:
            if self._closed or (self._pipe < 0 and not self._restart()) \
                    or len(self._entries) + self._buffered() >= self._settings.inference_log_queue:
                self.counters.log_dropped(1)
                return
            self._entries.append(entry)
            if len(self._entries) >= FLUSH_RECORDS:
                self._flush()
            if (self._entries or self._framed) and not self._flush_due:
                self._flush_due = True
                try:
                    asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._timed_flush)
                except RuntimeError:  # not on an event loop (a test's thread): now
                    self._flush_due = False
                    self._flush()

    def close(self, timeout: float) -> None:
        """Send what is buffered, then wait at most `timeout` seconds for the writer to write it (the SIGTERM drain).
        The writer is given a second less, to report what it could not write before it is stopped."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pipe < 0 or self._process is None:
                self.counters.log_dropped(len(self._entries))
                return
            self._encode()
            if self._send_all(deadline):  # else the stream ends mid-frame: the writer takes its default drain
                self._send_all(deadline, frame(max(0.0, deadline - time.monotonic() - 1)))
            os.close(self._pipe)
            self._pipe = -1
            process = self._process
        try:
            process.wait(max(0.0, deadline - time.monotonic()) + 1)
        except subprocess.TimeoutExpired:
            process.kill()
            log.error("model %s version %s: the inference log writer did not finish within the drain",
                      self._settings.model_name, self._settings.model_version)

    def _encode(self) -> None:
        """The entries kept, as one frame. An entry pickle cannot take (a model may answer with any object)
        is dropped alone: the others are then encoded one by one."""
        entries, self._entries = self._entries, []
        if not entries:
            return
        try:
            self._add_frame(entries)
        except Exception:
            for entry in entries:
                try:
                    self._add_frame([entry])
                except Exception as e:
                    self.counters.log_dropped(1)
                    log.warning("model %s version %s: an inference-log record could not be encoded (%s)",
                                self._settings.model_name, self._settings.model_version, type(e).__name__)

    def _add_frame(self, entries: list[Entry]) -> None:
        self._framed.append((self._frames.add(to_frame(entries), len(entries)), len(entries)))

    def _buffered(self) -> int:
        """Records in the buffer, not yet wholly in the pipe."""
        return sum(records for _, records in self._framed)

    def _timed_flush(self) -> None:
        with self._lock:
            self._flush_due = False
            self._flush()
            if (self._entries or self._framed) and not self._closed:  # the pipe is full: later
                self._flush_due = True
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._timed_flush)

    def _flush(self) -> None:
        """Encode the entries kept, and write what the pipe takes without waiting; the rest stays for the next flush."""
        if self._pipe < 0:
            return
        self._encode()
        with self._buffer.getbuffer() as data:
            try:
                written = os.write(self._pipe, data)
            except BlockingIOError:
                return
            except OSError:  # the writer is gone (EPIPE)
                written = -1
            rest = bytes(data[written:]) if written >= 0 else b""
        if written < 0:
            self._writer_gone()
            return
        self._sent(written, rest)

    def _sent(self, written: int, rest: bytes) -> None:
        """`written` bytes are in the pipe: the frames that ended there leave the buffer, `rest` stays."""
        sent = bisect.bisect_right(self._framed, written, key=lambda framed: framed[0])
        self._framed = [(end - written, records) for end, records in self._framed[sent:]]
        self._buffer.seek(0)
        self._buffer.truncate()
        self._buffer.write(rest)

    def _discard(self) -> None:
        """Empty the buffer (its records counted by the caller)."""
        self._buffer.seek(0)
        self._buffer.truncate()
        self._framed = []

    def _send_all(self, deadline: float, tail: bytes = b"") -> bool:
        """At close: the buffer (and `tail`), waiting for the pipe until `deadline`; what is left then is dropped.
        Whether all of it was sent."""
        data = memoryview(self._buffer.getvalue() + tail)
        sent = 0
        ready = select.poll()
        ready.register(self._pipe, select.POLLOUT)
        while sent < len(data) and time.monotonic() < deadline:
            ready.poll(max(0.0, deadline - time.monotonic()) * 1000)
            try:
                sent += os.write(self._pipe, data[sent:])
            except BlockingIOError:
                continue
            except OSError:
                break
        self._sent(min(sent, len(data) - len(tail)), b"")
        if lost := self._buffered():
            self.counters.log_dropped(lost)
            log.error("model %s version %s: %d inference-log records not handed to the writer before the drain ended",
                      self._settings.model_name, self._settings.model_version, lost)
            self._discard()
        return sent == len(data)

    def _writer_gone(self) -> None:
        """The writer died: what it held is lost, and what is buffered is counted as dropped; another one is started."""
        lost = self._buffered()
        log.error("model %s version %s: the inference log writer is gone; %d buffered records lost, and those it held",
                  self._settings.model_name, self._settings.model_version, lost)
        self.counters.log_dropped(lost)
        self._discard()
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        self._pipe = -1
        self._restart()

    def _restart(self) -> bool:
        """Start a writer again, at most every RESTART_SECONDS (on the event loop: a spawn, a few milliseconds)."""
        if self._closed or time.monotonic() - self._started < RESTART_SECONDS:
            return False
        return self._start_writer()

    def _start_writer(self) -> bool:
        """A writer process with the settings and layout sent; False (and logged) when it cannot be started."""
        self._started = time.monotonic()
        process, pipe = None, -1
        try:
            # A session of its own: a signal sent to the wrapper's process group (a terminal's Ctrl-C, an init
            # that signals the group) reaches only the wrapper, which drains and then closes the pipe; the
            # writer could otherwise die of it while still starting, before it ignores such signals.
            process = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       start_new_session=True)
            assert process.stdin is not None
            pipe = os.dup(process.stdin.fileno())
            process.stdin.close()  # nothing written through it: closing cannot fail
            with contextlib.suppress(OSError, AttributeError):  # Linux only; the default 64 KiB otherwise
                fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            hello = memoryview(self._hello)
            while hello:
                hello = hello[os.write(pipe, hello):]
        except OSError as e:
            log.error("model %s version %s: the inference log writer cannot start (%s); records are dropped until "
                      "it can", self._settings.model_name, self._settings.model_version, e)
            if pipe >= 0:
                os.close(pipe)
            if process is not None:
                process.kill()
                if process.stdout is not None:
                    process.stdout.close()
                threading.Thread(target=process.wait, daemon=True).start()  # reaped without waiting here
            return False
        os.set_blocking(pipe, False)
        self._pipe, self._process = pipe, process
        threading.Thread(target=self._read_counts, args=(process,), name="inference-log-counts", daemon=True).start()
        return True

    def _read_counts(self, process: subprocess.Popen[bytes]) -> None:
        """The writer's counts, into `counters`, until it exits (then reaped here)."""
        assert process.stdout is not None
        for line in process.stdout:
            what, _, number = line.partition(b" ")
            if what == b"written":
                self.counters.log_written(int(number))
            elif what == b"dropped":
                self.counters.log_dropped(int(number))
            elif what == b"error":
                self.counters.log_write_error()
        process.stdout.close()
        process.wait()
