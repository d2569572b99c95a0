"""The tracking wing: MLflow. The client (tracker: parent and child runs, tags, the shared
SQLite store), results delivered while the tracking server may be down (delivery), the Tune
callback that mirrors trials into child runs and counts failures (trial_logger), and the final
model as MLflow logs it (pyfunc_model, mlflow_model).

Imports nothing itself: a command imports the module it needs. This package took the
name of the old module search.tracking, now search.tracking.tracker: the old module's names are handed
out from there, lazily, so that what was pickled by the old path still unpickles
(search/__init__.py)."""

# The old module search.tracking's own names, now in search.tracking.tracker.
OLD_NAMES = frozenset({"PARENT_TAG", "TRIAL_TAG", "EPOCH_METRICS", "epoch_metrics", "default_tracking_uri", "ChildRun",
                       "Tracker"})


def __getattr__(name: str):
    if name in OLD_NAMES:
        from search.tracking import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

