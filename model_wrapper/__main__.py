"""`python -m model_wrapper`: serve the model named by the environment (the image's CMD)."""

import sys

from model_wrapper.server import main

sys.exit(main())
