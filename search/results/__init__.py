"""The results wing: a study's folder. Its files named (files), study.json with what was asked
and how far it got (request, checked by study_fields), the Optuna store (optuna_store), what
Tune recorded (records), the trials table and history (trials_table), best.yaml (best_config),
the accuracy-cost front and device limits (front); the folder read back (folder), found by name
(locate), checked before a resume (resuming), and a write the disk refuses (disk). No Ray or
MLflow here: reading results needs neither.

Imports nothing itself: a command imports the module it needs. This package took the
name of the old module search.results, now search.results.folder: the old module's names are handed
out from there, lazily, so that what was pickled by the old path still unpickles
(search/__init__.py)."""

# The old module search.results's own names, now in search.results.folder.
OLD_NAMES = frozenset({"StudyResults", "load"})


def __getattr__(name: str):
    if name in OLD_NAMES:
        from search.results import folder

        return getattr(folder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
