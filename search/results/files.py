"""The files of a study's results folder, named once: every reader and writer imports them
from here (this module imports nothing, so reading results never imports Ray or torch)."""

STATE_FILE = "study.json"  # search.results.request.StudyState: what was asked and how far it got
TUNE_DIR = "tune"  # Ray Tune's experiment (its state, trial folders and checkpoints)
OPTUNA_DB = "optuna.db"  # the Optuna study TPE searched in (search.tune.searcher), unless on a database server
TRIALS_PARQUET, TRIALS_CSV = "trials.parquet", "trials.csv"  # one row per trial
HISTORY_FILE = "history.csv"  # one row per trial and epoch
BEST_FILE = "best.yaml"  # the chosen configuration, retrainable with search.train
MODEL_FILE = "model.pt"  # the final network, self-contained
CONFUSION_FILE = "confusion_matrix.csv"
REPORT_FILE, REPORT_DIR = "report.html", "report"  # the report page and its figures
