"""The study registry, as timm's `_registry.py`: a study module registers its study when it is
imported, and `spaces/__init__.py` imports them all, so importing anything from `spaces`
fills the registry."""

from __future__ import annotations

from spaces.study import Study
from trainables.errors import UserError

_REGISTRY: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    if study.name in _REGISTRY:
        raise ValueError(f"study {study.name!r} is registered twice")
    _REGISTRY[study.name] = study
    return study


def get_study(name: str) -> Study:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown study {name!r}; known studies: {', '.join(list_studies())}") from None


def list_studies() -> list[str]:
    return sorted(_REGISTRY)
