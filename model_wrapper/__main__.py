"""`python -m model_wrapper`: serve the model named by the environment (the image's CMD);
`python -m model_wrapper evaluate`: run the evaluation gate on it instead (model_wrapper.evaluate.job);
`python -m model_wrapper log-writer`: the inference log's writer, started by the serving process itself
(model_wrapper.log_process)."""

import sys

if sys.argv[1:2] == ["evaluate"]:
    from model_wrapper.evaluate.job import main as evaluate

    sys.exit(evaluate(sys.argv[2:]))

if sys.argv[1:2] == ["log-writer"]:
    from model_wrapper.log_process import main as write_inference_log

    sys.exit(write_inference_log())

from model_wrapper.server import main

sys.exit(main())
