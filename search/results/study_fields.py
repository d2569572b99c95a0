"""What each field of a study.json may hold. The file is written by hpsearch, but it is read back by
--resume, the report, the dashboard and warm starts, and may have been edited or damaged since:
a field of the wrong type or range is refused here, by name, in one line, not met as a traceback
deep inside a phase. Imports nothing of hpsearch's but the error type: every reader may use it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from trainables.errors import UserError

SEED_LIMIT = 2 ** 32  # numpy's seeds; search.run refuses others on the command line
PHASES = ("search", "final", "done")
# The final model's modes (what each does: search.study.final); spelled once, here, where no torch is imported.
FINAL_MODES = ("stretch", "continue", "retrain", "checkpoint")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(v) -> bool:
    return _number(v) and math.isfinite(v) and v > 0


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# What each study.json field may hold (None allowed where the request's default is None), and
# how to say it: a hand-edited or damaged file is refused here, by name, not deep inside a phase.
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (lambda v: isinstance(v, str), "text") for k in (
        "space", "name", "results_root", "tracking_uri", "command", "created", "parent_run_id")},
    **{k: (lambda v: v is None or isinstance(v, str), "text or null") for k in (
        "register_model", "optuna_storage", "warm_start_map", "study_source")},
    "data": (lambda v: isinstance(v, dict), "a mapping (dataset, data_dir, ...)"),
    "samples": (lambda v: v is None or _count(v), "a positive whole number or null"),
    "max_epochs": (lambda v: v is None or _count(v), "a positive whole number or null"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < SEED_LIMIT,
             f"a whole number from 0 to {SEED_LIMIT - 1}"),
    "smoke": (lambda v: isinstance(v, bool), "true or false"),
    "delivered": (lambda v: isinstance(v, bool), "true or false"),
    **{k: (lambda v: v is None or _positive(v), "a positive number or null") for k in (
        "time_budget", "max_mmacs", "max_latency_ms")},
    "cv": (lambda v: v is None or (_count(v) and v >= 2), "a whole number of folds, 2 or more, or null"),
    "precision": (lambda v: v in ("auto", "bf16", "fp32"), "auto, bf16 or fp32"),
    "final": (lambda v: v in FINAL_MODES, ", ".join(FINAL_MODES)),
    "scheduler": (lambda v: v is None or v in ("promotion", "stopping", "fifo"), "promotion, stopping, fifo or null"),
    "phase": (lambda v: v in PHASES, ", ".join(PHASES)),
    "warm_start": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v),
                   "a list of paths"),
}


def check_fields(body: dict, path: Path) -> None:
    """Every field of a study.json `body` that is present holds what it may (see _FIELDS)."""
    for key, value in body.items():
        rule = _FIELDS.get(key)
        if rule is None:
            raise UserError(f"{path} is damaged (unknown field {key!r}); start a new study with another --name")
        ok, what = rule
        if not ok(value):
            raise UserError(f"{path} is damaged: {key} must be {what}, not {json.dumps(value)[:80]}; put the "
                            "value the study was started with back, or start a new study with another --name")
