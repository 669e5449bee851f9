"""Seconds, parsed in one place: timeouts in serve_config.yaml, the
Request-Timeout header and `Prefer: wait=N` all read them here. Each caller
words its own error, since each names its own field or header."""

import math
from collections.abc import Collection
from typing import Optional, Union


def parse_seconds(
    value: Union[str, int, float], *, no_limit: Collection[str] = (), positive: bool = True
) -> Optional[float]:
    """A number, or text holding one, as float seconds; None when the text is
    one of `no_limit` (lowercase words that mean "no limit"). Raises
    ValueError for anything else, for inf and nan, and (if `positive`) for
    zero and below. A bool is not a number here: `true` is not 1 second."""
    if isinstance(value, str):
        if value.strip().lower() in no_limit:
            return None
        seconds = float(value)  # ValueError when it is not a number
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f"{value!r} is not a number of seconds")
    if not math.isfinite(seconds) or (positive and seconds <= 0):
        raise ValueError(f"{value!r} is not a {'positive ' if positive else ''}finite number of seconds")
    return seconds
