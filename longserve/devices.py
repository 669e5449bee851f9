"""Which device a model replica runs on.

CUDA only when Ray assigned the replica a GPU (`ray_actor_options.num_gpus`
> 0: Ray sets CUDA_VISIBLE_DEVICES) AND CUDA really works in this process.
A node can advertise GPUs that are not there (`ray start --num-gpus 1` on a
CPU machine, a driver that failed to load, a CPU-only torch build in the
image): then the replica runs on the CPU and says why in a WARNING, instead
of crashing while loading its weights.
"""

import logging
import os

logger = logging.getLogger("ray.serve")


def cuda_usable() -> tuple[bool, str]:
    """(usable, why not). Asks torch, then CTranslate2 (the transcriber's runtime)."""
    reasons = []
    try:
        import torch

        if torch.cuda.is_available():
            return True, ""
        reasons.append(f"torch {torch.__version__} sees no CUDA device"
                       + (" (a CPU-only build)" if torch.version.cuda is None else ""))
    except Exception as exc:  # no torch, or a broken CUDA install
        reasons.append(f"torch: {exc!r}")
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return True, ""
        reasons.append("CTranslate2 sees no CUDA device")
    except Exception as exc:
        reasons.append(f"ctranslate2: {exc!r}")
    return False, "; ".join(reasons)


def choose_device(gpu_ids: list, what: str = "replica") -> str:
    """"cuda" or "cpu" for a replica that Ray gave `gpu_ids` (ray.get_gpu_ids())."""
    if not gpu_ids:
        return "cpu"
    usable, why = cuda_usable()
    if usable:
        return "cuda"
    logger.warning(
        "%s: Ray assigned GPU %s (CUDA_VISIBLE_DEVICES=%r) but CUDA is not usable here (%s); running on the CPU",
        what, gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"), why,
    )
    return "cpu"
