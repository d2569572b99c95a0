"""What a study is: a search space plus the settings that are not searched (dataset, metric,
trials, epochs, ASHA, resources, model-cost cap). Spaces are either define-by-run functions for
Optuna (conditional parameters are natural there) or an exact grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class StudySettings:
    dataset: str = "fashion_mnist"
    metric: str = "val_accuracy"
    mode: str = "max"
    num_samples: int = 20
    max_epochs: int = 10
    # "promotion": asynchronous successive halving that pauses a trial at each rung and resumes the
    # best (search.tune.rungs); "stopping": Ray's ASHA, which stops a trial below a rung's cutoff for
    # good ("asha" is the same); "fifo": every trial runs to max_epochs. The default is the only
    # one that searches with one trial at a time (the scheduler replay, docs/benchmarks.md: with
    # 37 recorded curves it could not yet tell the variants apart by accuracy).
    scheduler: str = "promotion"
    # ASHA's first rung, in epochs; below 1, trials report inside their first epoch so poor
    # ones are dropped after a fraction of it (rungs follow at grace x reduction_factor^k).
    grace_period: float = 1.0
    reduction_factor: int = 3
    # Hyperband brackets: bracket s starts its rungs at grace x reduction_factor^s, a hedge
    # for configurations that start slowly (heavy augmentation) against a low first rung.
    brackets: int = 1
    cpus_per_trial: int | None = None  # None: search.tune.tuner.CPU_THREADS_PER_TRIAL (or fewer CPUs if fewer)
    gpus_per_trial: float = 0.25  # used only when the run has GPUs: several small trials share one
    # Cap on multiply-adds per image (millions): keeps CPU runs practical; GPUs get the full space.
    max_mmacs_cpu: float | None = 12.0  # studies on small images set a tighter cap
    max_mmacs_gpu: float | None = None
    # On CPUs, minutes after which no trial starts and running ones stop (their best epoch's
    # checkpoint is kept), when the run keeps the study's own budget (no --samples / --max-epochs).
    # --time-budget always wins; GPU runs have no default budget, like no default cost cap.
    time_budget_min_cpu: float | None = None
    n_startup_trials: int = 6
    val_fraction: float = 0.1
    needs_backbone: bool = False  # transfer studies: the run must name a trained network (--weights)
    # The data shape the space is designed around (CSV studies: a typical file); the registry's
    # tests sample every space with it.
    example_input: tuple[int, int, int] = (1, 28, 28)
    example_classes: int = 10

    @property
    def takes_images(self) -> bool:
        """Whether the space is built for images (so for a folder of the user's own, too), not
        for rows of features."""
        return self.example_input[1] > 1 or self.example_input[2] > 1

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.scheduler == "asha":
            object.__setattr__(self, "scheduler", "stopping")
        if self.scheduler not in ("promotion", "stopping", "fifo"):
            raise ValueError(f"scheduler must be 'promotion', 'stopping' or 'fifo', got {self.scheduler!r}")
        if not 0 < self.grace_period <= self.max_epochs:
            raise ValueError(f"grace_period must be in (0, max_epochs={self.max_epochs}], got {self.grace_period}")
        if self.brackets < 1:
            raise ValueError(f"brackets must be 1 or more, got {self.brackets}")


@dataclass(frozen=True)
class SpaceContext:
    """What a define-by-run space may depend on: the data's shape and the model-cost cap."""

    input_shape: tuple[int, int, int]
    num_classes: int
    max_macs: int | None
    backbone_layers: int = 0  # transfer studies: conv/linear layers of the backbone's body


# (trial, context) -> constants to add to the config, or None
DefineFn = Callable[[Any, SpaceContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    settings: StudySettings = field(default_factory=StudySettings)
    define: DefineFn | None = None
    # An exact grid: every configuration, as flat hyperparameters, run once each.
    grid: tuple[Mapping[str, Any], ...] | None = None
    # Known-good configurations tried first (e.g. the configuration a user tuned by hand).
    start_points: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if (self.define is None) == (self.grid is None):
            raise ValueError(f"study {self.name!r} needs exactly one of define= or grid=")

    @property
    def is_grid(self) -> bool:
        return self.grid is not None

    def grid_points(self) -> list[dict[str, Any]]:
        assert self.grid is not None
        return [dict(p) for p in self.grid]
