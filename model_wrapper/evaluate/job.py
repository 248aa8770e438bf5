"""`python -m model_wrapper evaluate`: score the version (and the live one) on its evaluation data.

Run by the watcher's evaluation gate in the wrapper image: as a Kubernetes Job, or a process on
the local target, with the same environment as the model's Deployment. It prints one JSON line
and writes it to TERMINATION_LOG: the figures, or the problem that kept it from measuring them
(`{"ok": false, "problem": "contract" | "model", "message": ...}`). Either way it exits 0; a
non-zero exit means it could not run at all (out of memory, a crash), which the watcher retries.
The verdict itself is the watcher's (`model_wrapper.contract.evaluation.verdict`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from model_wrapper.config.logs import configure_logging
from model_wrapper.config.settings import SettingsError, WrapperSettings, load_settings
from model_wrapper.contract.evaluation import Evaluation
from model_wrapper.contract.redaction import redact
from model_wrapper.errors import LoadFailure
from model_wrapper.evaluate.scoring import BATCH_ROWS, DataProblem, Tally, check_columns, read_batches, rows_of
from model_wrapper.predict.predictor import LoadedModel

log = logging.getLogger(__name__)
MAX_DATA_BYTES = 1 << 30
EXIT_BAD_SETTINGS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_wrapper evaluate", description=__doc__)
    parser.add_argument("--live-source", help="MODEL_SOURCE of the version serving now (compare_with_live)")
    parser.add_argument("--live-version", help="its version number")
    parser.add_argument("--live-run-id", default=None, help="its run id")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help="rows read and scored at a time")
    parser.add_argument("--max-bytes", type=int, default=MAX_DATA_BYTES, help="largest data file accepted")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"model-wrapper evaluate: {e}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(settings)
    with tempfile.TemporaryDirectory(prefix="model-evaluate-") as workdir:
        result = evaluate(settings, args, Path(workdir))
    line = json.dumps(_redacted(result, settings.secrets()), allow_nan=False, default=str)
    print(line, flush=True)
    _termination_message(settings.termination_log, line)
    return 0


def evaluate(settings: WrapperSettings, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The figures, or `{"ok": False, ...}` naming what stopped the evaluation."""
    from model_wrapper.loading.mlflow_loader import beside_contract, load_model  # imports MLflow: only when evaluating

    try:
        model = load_model(settings, workdir / "version")
    except LoadFailure as e:
        return _problem("model", str(e))
    evaluation = model.contract.evaluation
    if evaluation is None:
        return _problem("contract", "the contract has no evaluation section")
    try:
        path = beside_contract(model, evaluation.data, workdir / "data")
    except LoadFailure as e:
        return _problem("model", str(e))
    if path is None:
        return _problem("contract", f"evaluation.data {evaluation.data!r} is not among the files logged beside "
                                    f"the {model.contract_origin}; log it there")
    if path.stat().st_size > args.max_bytes:
        return _problem("contract", f"{evaluation.data} is {path.stat().st_size} bytes; the limit is "
                                    f"{args.max_bytes}; evaluate on a sample")
    live = None
    if args.live_source and evaluation.compare_with_live is not None:
        environ = {"MODEL_SOURCE": args.live_source, "MODEL_VERSION": args.live_version or "?",
                   "MODEL_RUN_ID": args.live_run_id or ""}
        try:
            live = load_model(load_settings(environ), workdir / "live")
        except (LoadFailure, SettingsError) as e:
            return _problem("model", f"the live version {args.live_version} cannot be loaded to compare: {e}")
    try:
        return _score(model, live, path, evaluation.data, args.batch_rows, args.live_version)
    except DataProblem as e:
        return _problem("contract", str(e))


def _score(model: LoadedModel, live: LoadedModel | None, path: Path, name: str, batch_rows: int,
           live_version: str | None) -> dict[str, Any]:
    evaluation = model.contract.evaluation
    assert evaluation is not None
    tallies = [(model, _tally(model, evaluation)), *([(live, _tally(live, evaluation))] if live is not None else [])]
    offset = 0
    for batch in read_batches(path, name, batch_rows):
        if offset == 0:
            check_columns(batch.columns, model.contract, evaluation, name)
        for loaded, tally in tallies:
            which = "the version" if loaded is model else f"the live version {live_version}"
            try:
                rows = rows_of(batch, loaded.contract, loaded.backend.columns, name, first_row=offset + 1)
                predictions, probabilities = loaded.backend.predict(rows)
            except DataProblem as e:
                raise DataProblem(f"{which}: {e}" if loaded is not model else str(e)) from e
            except Exception as e:  # the model's own error on these rows: the data does not suit it
                raise DataProblem(f"{which} could not predict rows {offset + 1}-{offset + len(batch)} of {name}: "
                                  f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}") \
                    from e
            tally.add(batch[evaluation.target], predictions, probabilities)
        offset += len(batch)
    result: dict[str, Any] = {"ok": True, "data": name, "rows": tallies[0][1].rows,
                              "metrics": tallies[0][1].results()}
    if live is not None:
        result["live"] = {"version": live_version, "metrics": tallies[1][1].results()}
    log.info("evaluated on %s (%d rows): %s", name, result["rows"], result["metrics"])
    return result


def _tally(model: LoadedModel, evaluation: Evaluation) -> Tally:
    """The new version's section measures both: the live version's contract need not have one."""
    return Tally(evaluation, model.contract.task, classes=model.backend.classes, labels=model.contract.labels)


def _problem(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "problem": kind, "message": " ".join(message.split())[:1500]}


def _redacted(value: Any, secrets: list[str]) -> Any:
    """The result with its text redacted before it becomes JSON (redacting the JSON itself could break it)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: _redacted(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, secrets) for item in value]
    return value


def _termination_message(path: Path, line: str) -> None:
    with contextlib.suppress(OSError):  # no termination log here (a plain shell): stdout carries the result
        path.write_text(line[:4096] + "\n")
