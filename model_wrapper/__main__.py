"""`python -m model_wrapper`: serve the model named by the environment (the image's CMD);
`python -m model_wrapper evaluate`: run the evaluation gate on it instead (model_wrapper.evaluate.job)."""

import sys

if sys.argv[1:2] == ["evaluate"]:
    from model_wrapper.evaluate.job import main as evaluate

    sys.exit(evaluate(sys.argv[2:]))

from model_wrapper.server import main

sys.exit(main())
