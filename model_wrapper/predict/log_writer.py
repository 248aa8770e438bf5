"""The inference log's writer: batches of records written as Parquet files to S3, in a process of its own.

`python -m model_wrapper log-writer` (`model_wrapper.log_process`) runs `serve_frames`,
fed through its stdin by the serving process's `model_wrapper.predict.inference_log.InferenceLog`:
first the settings and the model's `Layout`, then frames of logged requests, and its counts go back
as lines on stdout. Encoding and uploading there, not in a thread of the serving process, keeps them
off the interpreter that answers requests (KServe's logger is a sidecar for the same reason).

`LogWriter` keeps the records in a bounded queue (a full one drops them, counted); one thread
batches them, every INFERENCE_LOG_BATCH_RECORDS requests or INFERENCE_LOG_BATCH_SECONDS, into
`s3://<bucket>/<prefix>/<slug>/<version>/date=YYYY-MM-DD/<pod>-<seq>.parquet`; a failed upload is
kept and retried with a growing pause (counted). `close` writes what is queued within a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, TextIO

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.predict.inference_records import (
    Entry,
    Layout,
    UnreadableFrame,
    from_frame,
    parquet_file,
    read_frame,
    split_by_day,
    to_table,
)

log = logging.getLogger(__name__)
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 15.0
_POLL_SECONDS = 0.1


class Counters(Protocol):
    """Where the log counts what it does (the wrapper's Prometheus metrics)."""

    def log_written(self, records: int) -> None: ...
    def log_dropped(self, records: int) -> None: ...
    def log_write_error(self) -> None: ...


class NoCounters:
    def log_written(self, records: int) -> None: ...
    def log_dropped(self, records: int) -> None: ...
    def log_write_error(self) -> None: ...


class Sink(Protocol):
    """Where the files go (`model_wrapper.loading.log_sink.S3Sink`)."""

    def put(self, bucket: str, key: str, body: bytes) -> None: ...


class LogWriter:
    """Queues and writes the records of one served model version."""

    def __init__(self, settings: WrapperSettings, layout: Layout, *, sink: Callable[[], Sink],
                 bucket: Callable[[], str | None], counters: Counters | None = None) -> None:
        """`sink` and `bucket` are called in the writer thread, once, when the first file is due."""
        self.counters: Counters = counters or NoCounters()
        self._settings = settings
        # A deque, not a queue.Queue: appending takes no lock and wakes no thread per record; the
        # writer looks every poll or when a batch is full.
        self._entries: deque[Entry] = deque()
        self._wake = threading.Event()
        self._sink_factory = sink
        self._bucket_of = bucket
        self._layout = layout
        self._pending: list[list[Entry]] = []
        self._pending_records = 0
        """Records taken from the queue and not written yet (S3 failing): they count against the bound too."""
        self._sink: Sink | None = None
        self._bucket: str | None = None
        self._failures, self._retry_at = 0, 0.0
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._files = _FileNames(settings, _pod_name())
        self.folder = self._files.folder
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def add(self, entry: Entry) -> None:
        entries = self._entries
        if len(entries) + self._pending_records >= self._settings.inference_log_queue:
            self.counters.log_dropped(1)
            return
        entries.append(entry)
        if len(entries) == self._settings.inference_log_batch_records:
            self._wake.set()

    def close(self, timeout: float) -> None:
        """Write what is queued, trying for at most `timeout` seconds (the SIGTERM drain)."""
        if self._closing.is_set():
            return
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout + 1)

    def _run(self) -> None:
        while True:
            closing = self._closing.is_set()
            if closing and time.monotonic() > self._deadline:
                return self._give_up()
            if batch := self._collect(closing):
                self._pending.append(batch)
            if self._pending and time.monotonic() >= self._retry_at:
                self._try_write()
            if closing and not self._pending and not self._entries:
                return None
            if not batch:
                self._wake.wait(_POLL_SECONDS)
                self._wake.clear()

    def _collect(self, closing: bool) -> list[Entry]:
        """Entries for one file, once due: a batch's worth, or the oldest INFERENCE_LOG_BATCH_SECONDS old,
        or whatever is left once closing."""
        entries, limit = self._entries, self._settings.inference_log_batch_records
        if not entries or not (closing or len(entries) >= limit
                               or time.time() - entries[0].at >= self._settings.inference_log_batch_seconds):
            return []
        taken = min(limit, len(entries))
        self._pending_records += taken  # counted before they leave the queue, so `add` never misses them
        return [entries.popleft() for _ in range(taken)]

    def _try_write(self) -> None:
        try:
            self._sink = self._sink or self._sink_factory()
            self._write_pending(self._sink, self._bucket or self._resolve_bucket())
            self._failures, self._retry_at = 0, 0.0
        except Exception as e:  # any S3 trouble (or none resolved yet): keep the batch, try again later
            self.counters.log_write_error()
            self._failures += 1
            pause = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + pause
            log.warning("model %s version %s: inference log not written (%s); retrying in %.1fs",
                        self._settings.model_name, self._settings.model_version, _first_line(e), pause)

    def _write_pending(self, sink: Sink, bucket: str) -> None:
        """One file per batch and day, oldest first; a batch leaves the list only once written."""
        layout = self._layout
        while self._pending:
            batch = self._pending[0]
            day, entries, rest = split_by_day(batch)
            try:
                body = parquet_file(to_table(entries, layout))
            except Exception:  # the same records would fail again: dropped, counted, not retried
                log.exception("model %s version %s: %d inference-log records cannot be written as Parquet; dropped",
                              self._settings.model_name, self._settings.model_version, len(entries))
                self._done(rest, len(entries), self.counters.log_dropped)
                continue
            sink.put(bucket, self._files.next_key(day), body)
            self._done(rest, len(entries), self.counters.log_written)

    def _done(self, rest: list[Entry], records: int, count: Callable[[int], None]) -> None:
        """The first pending batch's records of one day are written (or dropped): `rest` stays pending."""
        self._pending[0:1] = [rest] if rest else []
        self._pending_records -= records
        count(records)

    def _resolve_bucket(self) -> str:
        self._bucket = self._bucket_of()
        if not self._bucket:
            raise RuntimeError("no bucket: the model's artifacts are not in S3; set INFERENCE_LOG_BUCKET")
        return self._bucket

    def _give_up(self) -> None:
        lost = sum(len(batch) for batch in self._pending) + len(self._entries)
        if lost:
            self.counters.log_dropped(lost)
            log.error("model %s version %s: %d inference-log records not written before the drain ended",
                      self._settings.model_name, self._settings.model_version, lost)


class _FileNames:
    """`<prefix>/<slug>/<version>/date=YYYY-MM-DD/<pod>-<seq>.parquet`; seq is this process's start
    (ms) and a counter, so a restarted container or a second worker never overwrites a file."""

    def __init__(self, settings: WrapperSettings, pod: str) -> None:
        self.folder = f"{settings.inference_log_prefix.strip('/')}/{settings.model_slug}/{settings.model_version}"
        self._stem = f"{pod}-{int(time.time() * 1000)}{os.getpid() % 100000:05d}"
        self._count = 0

    def next_key(self, day: str) -> str:
        self._count += 1
        return f"{self.folder}/date={day}/{self._stem}-{self._count:06d}.parquet"


def _pod_name() -> str:
    # Kubernetes sets HOSTNAME to the pod's name.
    name = os.environ.get("HOSTNAME") or socket.gethostname() or "wrapper"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:100]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def serve_frames(frames: BinaryIO, report: TextIO, *, sink: Callable[[WrapperSettings], Sink],
                 bucket: Callable[[WrapperSettings], str | None],
                 configure: Callable[[WrapperSettings], None] = lambda settings: None) -> None:
    """The writer process: the settings and layout, then frames of records until the serving process
    closes the stream (or sends the seconds its drain leaves), then what is queued within that time."""
    try:
        settings, layout = read_frame(frames)
    except EOFError:
        return
    configure(settings)
    writer = LogWriter(settings, layout, sink=lambda: sink(settings), bucket=lambda: bucket(settings),
                       counters=_Report(report))
    log.info("model %s version %s: inference log writer started, under %s", settings.model_name,
             settings.model_version, writer.folder)
    drain = settings.inference_log_flush_seconds
    while (entries := _next(frames, writer, settings)) is not None:
        if isinstance(entries, float):
            drain = entries
            break
        for entry in entries:
            writer.add(entry)
    writer.close(drain)


def _next(frames: BinaryIO, writer: LogWriter, settings: WrapperSettings) -> list[Entry] | float | None:
    """The next frame's entries (or the seconds the serving process's drain leaves), or None at the end of the
    stream: the serving process closed it (or died, with its default drain), possibly in the middle of a
    frame, which is then lost (its records, never the queue; the serving process counts what its drain could
    not send). A frame that cannot be loaded or taken apart is counted and skipped."""
    while True:
        try:
            return read_frame(frames, _entries)
        except EOFError:
            return None
        except pickle.UnpicklingError:
            log.warning("model %s version %s: the inference log's stream ended in the middle of a frame",
                        settings.model_name, settings.model_version)
            return None
        except UnreadableFrame as e:
            _lost(writer, e.records, e, settings)


def _entries(value: Any) -> list[Entry] | float:
    """A frame's entries, or the seconds the serving process's drain leaves (its last frame)."""
    return value if isinstance(value, float) else from_frame(value)


def _lost(writer: LogWriter, records: int, error: Exception, settings: WrapperSettings) -> None:
    writer.counters.log_dropped(records)
    log.error("model %s version %s: %d inference-log records dropped: their frame cannot be read (%s)",
              settings.model_name, settings.model_version, records, _first_line(error))


class _Report:
    """Counts as lines on the writer process's stdout, read by the serving process's `InferenceLog`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # the writer thread and the reading loop both count

    def log_written(self, records: int) -> None:
        self._line(f"written {records}")

    def log_dropped(self, records: int) -> None:
        self._line(f"dropped {records}")

    def log_write_error(self) -> None:
        self._line("error 1")

    def _line(self, text: str) -> None:
        with self._lock, contextlib.suppress(OSError):  # the serving process died: the writer drains all the same
            self._stream.write(text + "\n")
            self._stream.flush()
