"""What a resumed study takes from its own folder, and what it checks before Tune restores it.

Tune's saved state (tuner.pkl, the searcher's and the scheduler's state) holds the absolute paths
of the folder it was written in. A folder copied or moved since must neither read from nor write
to that place: the Optuna store is the one its own study.json names (the folder's optuna.db, or
its --optuna-storage), never a path pickled elsewhere; files under tune/ are its own tune/'s; a
copy of a study whose original is still there gets an MLflow run of its own rather than logging
into the original's. A store that is missing or damaged is found before Ray starts and refused in
one line (hpsearch never makes a new, empty store for a resumed study: TPE would forget every
trial, and the trials Tune restores would not be in it); an error while Tune restores the
searcher ends the run in one line instead of leaving Tune to restart the experiment and wait.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from search.results.files import OPTUNA_DB, STATE_FILE, TUNE_DIR
from search.util.credentials import redact
from trainables.errors import UserError

START_OVER = "start a new study with another --name"


class RestoreFailed(BaseException):
    """Raised by the searcher when it cannot be restored. A BaseException, not an Exception:
    Tune's controller catches every Exception its restore raises, logs it, restarts the
    experiment from nothing and, its searcher half restored, waits for trials that never come."""


# --- the folder being resumed ------------------------------------------------------------------

# Set by search.tune.tuner.restore_tuner before Tune unpickles anything: Tune restores from a staging
# copy of its state, so the folder cannot be found from the pickles' paths.
_folder: Path | None = None


def resuming_in(folder: Path | None) -> None:
    """`folder`: the study folder being resumed; None when a new search is built (in a process
    that resumed another before: a benchmark, a test), so that nothing is mapped to that one."""
    global _folder
    _folder = Path(folder) if folder is not None else None


def resumed_folder() -> Path:
    if _folder is None:
        raise RestoreFailed("Tune restored a searcher outside a resume (tuner.restore_tuner sets its folder)")
    return _folder


def own_tune_file(saved: str) -> str:
    """A file of Tune's folder named in a pickle (`saved`, possibly another folder's), in the
    resumed folder's own tune/; unchanged outside a resume."""
    return saved if _folder is None else str(_folder / TUNE_DIR / Path(saved).name)


def own_study_folder(saved: str) -> str:
    """The study folder named in a pickle (`saved`, possibly another folder's), as the resumed
    folder; unchanged outside a resume."""
    return saved if _folder is None else str(_folder)


def own_store(folder: Path, saved=None):
    """The Optuna store (search.results.optuna_store.Store) of the study in `folder`: where it is comes from the
    folder's own study.json (its optuna.db, or its --optuna-storage). `saved`: the store pickled
    with Tune's state; only its study name is taken (the name the study began with, which a
    renamed folder keeps in its store), and its URL only for a folder without a study.json (the
    benchmarks' searches), and then only a database server's."""
    import dataclasses

    from search.results.optuna_store import Store

    if (folder / STATE_FILE).is_file():
        mine = Store.of_folder(folder)
    elif saved is None or saved.in_folder:
        mine = Store.in_study_folder(folder, saved.name if saved is not None else folder.name)
    else:
        mine = saved
    return dataclasses.replace(mine, name=saved.name) if saved is not None else mine


# --- before Ray starts -------------------------------------------------------------------------

def check_store(folder: Path, tpe: bool) -> None:
    """A resumed TPE search's store is there and holds its study; one line saying what to do
    when it is not. A study without Tune's state yet (killed before its search began) starts
    its search afresh, and its store with it."""
    if not tpe or not (folder / TUNE_DIR / "tuner.pkl").is_file():
        return
    store = own_store(folder)
    if not store.in_folder:
        _check_server(folder, store)
        return
    if not store.file.is_file():
        raise UserError(f"cannot resume {folder.name}: its Optuna store {store.file} is missing, so TPE cannot pick "
                        f"up the trials it learnt from; put this study's own {OPTUNA_DB} back (a backup), or "
                        f"{START_OVER}")
    try:
        names = _sqlite_studies(store.file)
    except sqlite3.Error as e:
        raise UserError(f"cannot resume {folder.name}: its Optuna store {store.file} is damaged ({e}); put this "
                        f"study's own {OPTUNA_DB} back (a backup), or {START_OVER}") from None
    if store.name not in names and len(names) != 1:  # a renamed folder's file holds its one study
        raise UserError(f"cannot resume {folder.name}: its Optuna store {store.file} holds no study {store.name!r} "
                        f"({', '.join(names) or 'none'}); put this study's own {OPTUNA_DB} back, or {START_OVER}")


def _sqlite_studies(path: Path) -> list[str]:
    """The studies in an Optuna SQLite file, every page of it read first (a file cut short fails
    here). Opened read-only: the check changes nothing, its write-ahead log included."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
        return [row[0] for row in connection.execute("SELECT study_name FROM studies")]
    finally:
        connection.close()


def _check_server(folder: Path, store) -> None:
    """A database server's store is reachable; its study is checked by the searcher, by the
    name Tune saved (a renamed folder's study.json no longer says it)."""
    try:
        store.storage(read_only=True)
    except UserError as e:
        raise UserError(f"cannot resume {folder.name}: {e}; check that database, or {START_OVER}") from None


def copied_from(state) -> Path | None:
    """The folder this study folder is a copy of, when the study.json it holds was written in
    another folder that still holds the same study (the same MLflow run, begun at the same
    time); None for the study's own folder, or one that was moved (its old place is gone)."""
    here = state.request.folder
    saved = Path(state.saved_in) if state.saved_in else None
    if saved is None or saved.resolve() == here.resolve():
        return None
    try:
        original = json.loads((saved / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(original, dict) and original.get("created") == state.request.created and \
            original.get("parent_run_id") == state.parent_run_id:
        return saved
    return None


def own_run(state, say) -> None:
    """A copy of a study whose original is still there: the copy gets its own MLflow run (the
    original's stays the original's) and may not share the original's database store."""
    original = copied_from(state)
    if original is None:
        return
    if state.request.optuna_storage:
        raise UserError(f"{state.request.folder} is a copy of the study in {original}, whose Optuna study is in "
                        f"{redact(state.request.optuna_storage)}: resumed, both would write that one study; resume "
                        f"the original, or {START_OVER}")
    if state.parent_run_id:
        say(f"{state.request.folder.name} is a copy of the study in {original}: it gets an MLflow run of its own, "
            "and every trial's results are delivered to it")
    state.parent_run_id = ""
    state.delivered = False


@contextmanager
def restore_failures():
    """A searcher that could not be restored (RestoreFailed) as one line."""
    try:
        yield
    except RestoreFailed as e:
        raise UserError(str(e)) from None
