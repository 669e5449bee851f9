"""Which device a model replica runs on.

CUDA only when Ray assigned the replica a GPU (`ray_actor_options.num_gpus`
> 0: Ray sets CUDA_VISIBLE_DEVICES) AND CUDA really works in this process for
the library that runs the model (`Model.runtime`: torch, or CTranslate2 for
the transcriber). A node can advertise GPUs that are not there (`ray start
--num-gpus 1` on a CPU machine, a driver that failed to load, a CPU-only build
of the model's library in the image): then the replica runs on the CPU and
says why in a WARNING, instead of crashing while loading its weights. Only the
model's own library is asked: torch seeing CUDA says nothing about CTranslate2,
and the other way round.
"""

import logging
import os

logger = logging.getLogger("ray.serve")

RUNTIMES = ("torch", "ctranslate2")


def cuda_usable(runtime: str = "torch") -> tuple[bool, str]:
    """(usable, why not), as `runtime` (one of RUNTIMES) sees CUDA here."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown model runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    try:
        if runtime == "torch":
            import torch

            if torch.cuda.is_available():
                return True, ""
            return False, (
                f"torch {torch.__version__} sees no CUDA device"
                + (" (a CPU-only build)" if torch.version.cuda is None else "")
            )
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return True, ""
        return False, f"CTranslate2 {ctranslate2.__version__} sees no CUDA device"
    except Exception as exc:  # not installed, or a broken CUDA install
        return False, f"{runtime}: {exc!r}"


def choose_device(gpu_ids: list, what: str = "replica", runtime: str = "torch") -> str:
    """ "cuda" or "cpu" for a replica that Ray gave `gpu_ids` (ray.get_gpu_ids()),
    whose model runs on `runtime`."""
    if not gpu_ids:
        return "cpu"
    usable, why = cuda_usable(runtime)
    if usable:
        return "cuda"
    logger.warning(
        "%s: Ray assigned GPU %s (CUDA_VISIBLE_DEVICES=%r) but CUDA is not usable by %s here (%s); running on the CPU",
        what,
        gpu_ids,
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        runtime,
        why,
    )
    return "cpu"
