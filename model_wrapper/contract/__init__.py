"""Shared with the watcher (whose image copies this package whole): the contract and its signature checks
(`spec`, `signature`), the evaluation rules (`evaluation`), the `logging` and `drift`
sections (`monitoring`), the `rollout` section (`rollout`) and the comparison of two versions' answers
(`comparison`), names as DNS labels (`naming`), secrets
mounted as files (`secret_files`) and the one redactor (`redaction`). Pure: no I/O library, and nothing
else of model_wrapper or the watcher is imported here."""
