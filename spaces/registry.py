"""The study registry, as timm's `_registry.py`: a study module registers its study when it is
imported, and `spaces/__init__.py` imports them all, so importing anything from `spaces`
fills the registry. Studies from the user's own files, modules and installed packages come in
through spaces/loading.py, which collects what such code registers before adding it here."""

from __future__ import annotations

import contextlib
from typing import Iterator

from spaces.study import Study
from trainables.errors import UserError

BUILT_IN = "one of hpsearch's own studies"

_REGISTRY: dict[str, Study] = {}
_ORIGIN: dict[str, str] = {}  # study name -> where it came from: BUILT_IN, a file or a module
_collected: list[Study] | None = None  # while spaces.loading runs a user's code: what it registers


def register_study(study: Study) -> Study:
    if _collected is not None:
        _collected.append(study)
        return study
    if study.name in _REGISTRY:
        raise ValueError(f"study {study.name!r} is registered twice")
    _REGISTRY[study.name] = study
    _ORIGIN[study.name] = BUILT_IN
    return study


@contextlib.contextmanager
def collecting() -> Iterator[list[Study]]:
    """The studies that code run inside registers, collected instead of registered, so that the
    loader can check them (names taken, none at all) before adding them with `add_study`."""
    global _collected
    outer, _collected = _collected, []
    try:
        yield _collected
    finally:
        _collected = outer


def origin_of(name: str) -> str | None:
    return _ORIGIN.get(name)


def add_study(study: Study, origin: str) -> Study:
    """Register a study from `origin` (a file or module of the user's). The same origin may
    register a name again (its file loaded once more); another origin's name is refused."""
    taken = _ORIGIN.get(study.name)
    if taken is not None and taken != origin:
        raise UserError(f"{origin} registers a study named {study.name!r}, a name {taken} already has; "
                        "give the study another name")
    _REGISTRY[study.name] = study
    _ORIGIN[study.name] = origin
    return study


def get_study(name: str) -> Study:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown study {name!r}; known studies: {', '.join(list_studies())}") from None


def list_studies() -> list[str]:
    return sorted(_REGISTRY)
