"""The embedder, recording each batch (start, end, size) to a file named by
$LONGSERVE_BATCH_LOG: to see from outside whether a replica computes or waits."""

import os
import time

from longserve.models.embedder import Embedder


class RecordingEmbedder(Embedder):
    def predict_batch(self, inputs):
        started = time.monotonic()
        out = super().predict_batch(inputs)
        path = os.environ.get("LONGSERVE_BATCH_LOG")
        if path:
            with open(path, "a") as f:
                f.write(f"{started:.6f} {time.monotonic():.6f} {len(inputs)}\n")
        return out
