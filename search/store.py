"""Where a study's Optuna study is kept: an Optuna RDB store, the study folder's SQLite file
(optuna.db) by default or a database server the user gives (--optuna-storage). The searcher
(search.searcher) writes it; the report, warm starts and optuna-dashboard read it. No Ray here:
readers of a study folder need none."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from search.credentials import redact
from search.files import OPTUNA_DB
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

    @property
    def in_file(self) -> bool:
        return self.url.startswith("sqlite:///")

    def storage(self) -> optuna.storages.BaseStorage:
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if self.in_file else {"pool_pre_ping": True}
        if self.in_folder:
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"the Optuna store {redact(self.url)} needs a database driver that is not installed "
                            f"({e})", option="optuna_storage", fix="a sqlite:/// URL or install the driver") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors are many; the message names the problem
            raise UserError(f"cannot open the Optuna store {redact(self.url)}: {str(e).splitlines()[0]}",
                            option="optuna_storage", fix="a reachable database URL") from None

    def exists(self) -> bool:
        """Whether the store already holds a study of this name (a file store that is absent holds none)."""
        if self.in_file and not Path(self.url.removeprefix("sqlite:///")).exists():
            return False
        return self.name in optuna.study.get_all_study_names(self.storage())

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage())


def check_new_store(store: Store) -> None:
    """A new study must not join an older study of the same name in a shared database: TPE would
    take the other study's trials for its own."""
    if store.exists():
        raise UserError(f"the Optuna store {redact(store.url)} already has a study named {store.name!r}",
                        option="name", fix="another name (or --resume to continue that study)")
