"""`python -m model_wrapper log-writer`: the inference log's writer process.

Started by the serving process's `model_wrapper.predict.inference_log.InferenceLog`, which sends it the
settings and the records on stdin (`model_wrapper.predict.log_writer.serve_frames`); it writes to S3
with the wrapper's credentials (`model_wrapper.loading.log_sink`). A process of the top layer, beside
`model_wrapper.server` and importing none of it: no HTTP stack, and so a small one.
"""

from __future__ import annotations

import os
import signal
import sys

from model_wrapper.config.logs import configure_logging
from model_wrapper.loading.log_sink import S3Sink, log_bucket
from model_wrapper.predict.log_writer import serve_frames

NICENESS = 10
"""Where the pod's CPU is short, the serving process (and the requests it answers) has it first: the writer
gets about a tenth of a contended CPU, and its queue absorbs the difference until traffic eases."""


def main() -> int:
    """The signals that stop the pod are the serving process's to handle: it drains, then closes the
    stream, and only then does this process write what is left and exit."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)
    # Read in large chunks: the serving process writes its buffer at once, a hundred records a frame (stdin's
    # 8 KiB buffer would take several system calls per frame).
    with open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False) as frames:
        serve_frames(frames, sys.stdout, sink=S3Sink, bucket=log_bucket, configure=configure_logging)
    return 0
