"""hpsearch: hyperparameter search for image classifiers (CLI, tuner assembly, tracking, export).

The commands are the modules at the top of this package (run, train, predict, report, ...); the
engine lives in its wings: study (the lifecycle), reporting (report.html), tune (Ray Tune and
Optuna), tracking (MLflow), results (the study folder) and util (docs/architecture.md).

The engine's modules once sat here too, and Ray Tune pickled objects by those paths into every
study folder's tune/ (the trainable, searcher, schedulers, stoppers, callbacks): a study started
then must still resume. So each old path is an alias of the module's new one (MOVED): importing
`search.budget` gives the very module `search.tune.budget`, registered under both names, and
unpickling finds its classes. Two old modules share their names with wings (search.tracking,
search.results): their packages hand out the old modules' names lazily (OLD_NAMES there). The
finder imports nothing until an old path is asked for.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"

# Old module (search.NAME) -> where it lives now.
MOVED: dict[str, str] = {
    "asha": "search.tune.asha",
    "atomic": "search.util.atomic",
    "best_config": "search.results.best_config",
    "budget": "search.tune.budget",
    "claim": "search.study.claim",
    "clock": "search.util.clock",
    "cluster": "search.tune.cluster",
    "cores": "search.tune.cores",
    "credentials": "search.util.credentials",
    "delivery": "search.tracking.delivery",
    "disk": "search.results.disk",
    "distributions": "search.tune.distributions",
    "faults": "search.util.faults",
    "figures": "search.reporting.figures",
    "files": "search.results.files",
    "final": "search.study.final",
    "front": "search.results.front",
    "locate": "search.results.locate",
    "mirror": "search.tune.mirror",
    "mlflow_model": "search.tracking.mlflow_model",
    "phases": "search.study.phases",
    "progress": "search.util.progress",
    "provenance": "search.util.provenance",
    "pyfunc_model": "search.tracking.pyfunc_model",
    "records": "search.results.records",
    "replay": "search.reporting.replay",
    "request": "search.results.request",
    "resuming": "search.results.resuming",
    "rungs": "search.tune.rungs",
    "sampler": "search.tune.sampler",
    "searcher": "search.tune.searcher",
    "store": "search.results.optuna_store",
    "study_fields": "search.results.study_fields",
    "study_run": "search.study.study_run",
    "summary": "search.study.summary",
    "tpe_fast": "search.tune.tpe_fast",
    "trial": "search.tune.trial",
    "trial_logger": "search.tracking.trial_logger",
    "trials_table": "search.results.trials_table",
    "tuner": "search.tune.tuner",
    "warm": "search.tune.warm",
    "yaml_safe": "search.util.yaml_safe",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `search.OLD` for each old path in MOVED and loads it as the new module itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("search.") and fullname[len("search."):] in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a placeholder, replaced by the real module in exec_module

    def exec_module(self, module) -> None:
        # The import system returns whatever sys.modules holds under the name once this returns.
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__[len("search."):]])


# First in line: an old path must never be found as a file (an editable install's finder maps every
# search.* name into its own tree, where an old copy of the module may still lie).
if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OldPaths())
