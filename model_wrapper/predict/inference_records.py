"""Inference-log records and their Parquet form: one row per instance a request gave the model.

`Entry` is what the predict endpoint queues (cheap to build on the request path); `to_table` turns
a batch of them into an Arrow table in the writer thread (`model_wrapper.predict.inference_log`). Fields a
contract marks `log: false` never get a column: `Layout` leaves them out once, for every record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from model_wrapper.contract.spec import Contract, FieldType

if TYPE_CHECKING:  # pyarrow is imported by the writer thread, once logging is on: a fifth of a second of start-up
    import pyarrow as pa

INPUT, OUTPUT = "input.", "output."


@dataclass(slots=True)
class Entry:
    """One logged predict request, as queued."""

    request_id: str
    at: float
    """Seconds since the epoch (UTC) when the request arrived."""
    route: str
    status: int
    latency_ms: float
    rows: list[tuple[Any, ...]] | None
    answer: dict[str, Any] | None
    error: str | None = None
    """The error's code and the fields it names, never its message (which may quote a value)."""


@dataclass(frozen=True)
class Layout:
    """Which of the model's columns are logged, under which names and Arrow types."""

    model: str
    version: str
    indices: tuple[int, ...]
    names: tuple[str, ...]
    types: tuple[FieldType, ...]

    @classmethod
    def of(cls, model: str, version: str, contract: Contract, columns: Sequence[str]) -> Layout:
        kept = [(i, name) for i, name in enumerate(columns) if contract.inputs[name].log]
        return cls(model, version, tuple(i for i, _ in kept), tuple(f"{INPUT}{name}" for _, name in kept),
                   tuple(contract.inputs[name].type for _, name in kept))


def day_of(entry: Entry) -> str:
    return dt.datetime.fromtimestamp(entry.at, dt.UTC).strftime("%Y-%m-%d")


def to_table(entries: Sequence[Entry], layout: Layout) -> pa.Table:
    """The entries as one Arrow table: one row per instance (one row, without inputs, for a request
    whose body did not parse)."""
    import pyarrow as pa

    arrow_types = {FieldType.number: pa.float64(), FieldType.integer: pa.int64(), FieldType.string: pa.string(),
                   FieldType.boolean: pa.bool_()}
    meta: dict[str, list[Any]] = {key: [] for key in ("request_id", "timestamp", "route", "status", "latency_ms",
                                                     "instance", "error")}
    rows: list[tuple[Any, ...]] = []
    outputs: dict[str, list[Any]] = {"prediction": [], "probabilities": [], "label": []}
    for entry in entries:
        count = len(entry.rows) if entry.rows is not None else 1
        _extend_meta(meta, entry, count)
        rows.extend(entry.rows if entry.rows is not None else [()])
        _extend_outputs(outputs, entry.answer, count)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(meta["request_id"], pa.string()),
        "timestamp": pa.array(meta["timestamp"], pa.timestamp("ms", tz="UTC")),
        "model": pa.array([layout.model] * len(rows), pa.string()),
        "version": pa.array([layout.version] * len(rows), pa.string()),
        "route": pa.array(meta["route"], pa.string()), "status": pa.array(meta["status"], pa.int16()),
        "latency_ms": pa.array(meta["latency_ms"], pa.float64()), "instance": pa.array(meta["instance"], pa.int32()),
        "error": pa.array(meta["error"], pa.string()),
    }
    for index, name, kind in zip(layout.indices, layout.names, layout.types, strict=True):
        columns[name] = pa.array([row[index] if row else None for row in rows], arrow_types[kind])
    columns[f"{OUTPUT}prediction"] = _values(outputs["prediction"])
    if any(value is not None for value in outputs["probabilities"]):
        columns[f"{OUTPUT}probabilities"] = pa.array(outputs["probabilities"], pa.list_(pa.float64()))
    if any(value is not None for value in outputs["label"]):
        columns[f"{OUTPUT}label"] = pa.array(outputs["label"], pa.string())
    return pa.table(columns)


def _extend_meta(meta: dict[str, list[Any]], entry: Entry, count: int) -> None:
    stamp = int(entry.at * 1000)
    meta["request_id"] += [entry.request_id] * count
    meta["timestamp"] += [stamp] * count
    meta["route"] += [entry.route] * count
    meta["status"] += [entry.status] * count
    meta["latency_ms"] += [entry.latency_ms] * count
    meta["instance"] += list(range(count)) if entry.rows is not None else [None]
    meta["error"] += [entry.error] * count


def _extend_outputs(outputs: dict[str, list[Any]], answer: dict[str, Any] | None, count: int) -> None:
    answer = answer or {}
    for key, target in (("predictions", "prediction"), ("probabilities", "probabilities"), ("labels", "label")):
        values = answer.get(key)
        outputs[target] += _listed(values) if values is not None and len(values) == count else [None] * count


def _listed(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _values(values: list[Any]) -> pa.Array:
    """Predictions as Arrow infers them (numbers, strings, lists); anything mixed or nested as JSON text."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.array([None if v is None else orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY,
                                                             default=str).decode() for v in values], pa.string())
