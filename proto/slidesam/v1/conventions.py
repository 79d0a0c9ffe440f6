"""Names both sides of the wire agree on beyond the .proto messages: metadata keys and the names of
enum values as the command lines and settings spell them."""

from __future__ import annotations

from slidesam.v1 import slidesam_pb2 as pb

RETRY_AFTER_METADATA = "retry-after-ms"
"""Trailing metadata of a RESOURCE_EXHAUSTED answer: milliseconds to wait before retrying."""

STRATEGIES: dict[str, int] = {
    "": pb.PROMPT_STRATEGY_UNSPECIFIED,
    "plain": pb.PROMPT_STRATEGY_PLAIN,
    "consistent": pb.PROMPT_STRATEGY_CONSISTENT,
}
"""Prompt strategy names ('' = the server's default) and their wire values."""

STRATEGY_NAMES: dict[int, str] = {value: name for name, value in STRATEGIES.items()}

WINDOW_MODES: dict[str, int] = {
    "auto": pb.WINDOW_MODE_UNSPECIFIED,
    "multi": pb.WINDOW_MODE_MULTI,
    "single": pb.WINDOW_MODE_SINGLE,
}
"""How a field of view larger than one encoder window (1024 px at the resolution asked for) is segmented:
"auto" (the server's choice: multi-window when it is larger), "multi" (coarse to fine over windows at the
resolution asked for) or "single" (shrunk into one window, coarser than asked for; the result says so)."""
