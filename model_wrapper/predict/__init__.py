"""Transport-free prediction: the predictor and its state (`predictor`), request validation (`schema`),
the model backends (`backends`, `one_call`, `array_inputs`), the Open Inference Protocol codec (`v2`).
No MLflow import: loading hands the backends their scorers. May import config, errors and contract."""
