"""Where a study's Optuna study is kept: an Optuna RDB store, the study folder's SQLite file
(optuna.db) by default or a database server the user gives (--optuna-storage). The searcher
(search.tune.searcher) writes it; the report, warm starts and optuna-dashboard read it. No Ray here:
readers of a study folder need none."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from search.results.files import OPTUNA_DB, STATE_FILE
from search.results.study_fields import check_fields
from search.util.credentials import redact
from trainables.errors import UserError

STEPS_PER_EPOCH = 100  # intermediate-value steps per epoch: step 25 is a quarter epoch, 300 epoch 3
SQLITE_TIMEOUT_S = 60  # a dashboard or report reading the file holds its lock briefly; wait, don't fail


@dataclass(frozen=True)
class Store:
    """Where a study's Optuna study lives: an SQLAlchemy URL and the study's name in it."""

    url: str
    name: str
    in_folder: bool = False  # the study folder's own file, which moves with the folder

    @classmethod
    def in_study_folder(cls, folder: Path, name: str) -> "Store":
        return cls(f"sqlite:///{Path(folder).resolve() / OPTUNA_DB}", name, in_folder=True)

    @classmethod
    def for_study(cls, folder: Path, name: str, url: str | None) -> "Store":
        """`url`: the user's database (--optuna-storage), or None for the SQLite file in the folder."""
        return cls(url, name) if url else cls.in_study_folder(folder, name)

    @classmethod
    def of_folder(cls, folder: Path) -> "Store":
        """The store of a study folder, as its study.json names it."""
        try:
            state = json.loads((Path(folder) / STATE_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{Path(folder) / STATE_FILE} is unreadable or damaged ({e})") from None
        if not isinstance(state, dict):
            raise UserError(f"{Path(folder) / STATE_FILE} is damaged (not a mapping)")
        check_fields(state, Path(folder) / STATE_FILE)
        return cls.for_study(Path(folder), str(state.get("name") or Path(folder).name), state.get("optuna_storage"))

    @property
    def in_file(self) -> bool:
        return self.url.startswith("sqlite:///")

    @property
    def file(self) -> Path | None:
        return Path(self.url.removeprefix("sqlite:///")) if self.in_file else None

    def storage(self, read_only: bool = False) -> optuna.storages.RDBStorage:
        """`read_only`: opened as a viewer opens it, without creating tables or checking the schema
        (a viewer never writes a schema into a database, nor an empty file where none was)."""
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if self.in_file else {"pool_pre_ping": True}
        if read_only and self.file is not None and not self.file.is_file():
            raise UserError(f"the Optuna store {self.url} does not exist")
        if self.in_folder and not read_only:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if read_only:
                    storage = optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs, skip_table_creation=True,
                                                         skip_compatibility_check=True)
                    storage.get_all_studies()  # a file that is not an Optuna store fails here, not on the page
                    return storage
                storage = optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)
                if self.in_file:
                    _write_ahead(storage)
                return storage
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"the Optuna store {redact(self.url)} needs a database driver that is not installed "
                            f"({e})", option="optuna_storage", fix="a sqlite:/// URL or install the driver") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors are many; the message names the problem
            cause: BaseException = e
            while cause.__cause__ or cause.__context__:  # Optuna's wrapper hides the reason (no such table...)
                cause = cause.__cause__ or cause.__context__
            why = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            raise UserError(f"cannot open the Optuna store {redact(self.url)}: {why}",
                            option="optuna_storage", fix="a reachable database URL") from None

    def study_name(self, storage: optuna.storages.BaseStorage) -> str | None:
        """This study's name in the store, or None. A study folder renamed since it began is named
        after its new folder, but its own file holds one study, under the name it began with."""
        names = [s.study_name for s in storage.get_all_studies()]
        if self.name in names:
            return self.name
        return names[0] if self.in_folder and len(names) == 1 else None

    def exists(self) -> bool:
        """Whether the store already holds this study (a file store that is absent holds none)."""
        if self.file is not None and not self.file.exists():
            return False
        return self.study_name(self.storage()) is not None

    def load(self, read_only: bool = False) -> optuna.Study:
        storage = self.storage(read_only)
        name = self.study_name(storage)
        if name is None:
            raise UserError(f"the Optuna store {redact(self.url)} has no study named {self.name!r}")
        return optuna.load_study(study_name=name, storage=storage)


def _write_ahead(storage: optuna.storages.RDBStorage) -> None:
    """The writer's SQLite in write-ahead-log mode, synced at checkpoints rather than at every
    commit. Optuna commits once per suggested parameter, report and attribute; with SQLite's
    default rollback journal each commit waited for the disk, which made TPE's proposals 5x slower
    than in memory (`python -m search.bench scale`: ~280 ms against ~55 ms a proposal at a few
    dozen trials). A killed driver loses nothing committed; a power cut may lose the last commits
    but never corrupts the file, and Tune's own state, not this file, is what `--resume` trusts.
    Readers see the mode from the file. WAL needs every process that opens the file on one host:
    docs/scale.md says to give a folder on a network file system a database server instead."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # connections made before the listener (Optuna's schema set-up) are dropped


def check_url(url: str) -> None:
    """A password in the URL would be saved in study.json and in Tune's pickled state."""
    if url != redact(url):
        raise UserError(f"--optuna-storage {redact(url)}: the URL holds a password, which would be saved in the "
                        "study folder; give it to the database driver instead (PGPASSWORD or ~/.pgpass for "
                        "PostgreSQL, an option file for MySQL) and leave it out of the URL")


def check_new_store(store: Store) -> None:
    """A new study must not join an older study of the same name in a shared database: TPE would
    take the other study's trials for its own."""
    if store.in_folder:
        return  # a new study's folder is new: its file holds nothing yet
    check_url(store.url)
    if store.exists():
        raise UserError(f"the Optuna store {redact(store.url)} already has a study named {store.name!r}",
                        option="name", fix="another name (or --resume to continue that study)")
