"""Transport-free prediction: the predictor and its state (`predictor`), request validation (`schema`, and the
cheaper `numeric_batch` for plain numeric batches), the model backends (`backends`, `one_call`,
`array_inputs`), the Open Inference Protocol codec (`v2`), the inference log's sampling and hand-off
(`inference_log`, which starts the writer process it is given the command of), its writer (`log_writer`, run
in that process) and its Parquet records (`inference_records`). No MLflow import: loading hands the backends
their scorers. May import config, errors and contract."""
