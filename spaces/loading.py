"""Studies from outside hpsearch: a Python file of the user's that calls `register_study`
(`./my_study.py`), an object or module path (`my_package.my_module:study`), and installed packages
that add studies through the `hpsearch.studies` entry point group. `load_study_source` takes what a
user types on a command line and returns the one study it names; every bad source is a UserError
naming the problem and the fix.

Such code runs in this process, as importing a module does: load only files and packages you
trust. A file is loaded as a module named after its resolved path, so that loading it again (a
resumed search, say) finds the same functions under the same names.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from spaces.registry import add_study, collecting, get_study, list_studies, origin_of
from spaces.study import Study
from trainables.errors import UserError

ENTRY_POINTS = "hpsearch.studies"
EXAMPLE = "examples/my_study.py"
_installed: list[Study] | None = None


def load_study_source(spec: str) -> Study:
    """The study `spec` names: a registered study (hpsearch's own, or an installed package's), a
    file (`./my_study.py`, or `./my_study.py:NAME` where the file registers several), or an object
    or module path (`my_package.my_module:study`, `my_package.my_module`)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("name a study: a registered name, ./my_study.py or my_package.my_module:study")
    spec = spec.strip()
    if not _is_file(spec):
        known = _registered(spec)
        if known is not None:
            return known
    path, name = _split_file(spec) if _is_file(spec) else (None, None)
    studies = load_studies(str(path) if path is not None else spec)
    if name is not None:
        chosen = [s for s in studies if s.name == name]
        if not chosen:
            raise UserError(f"{path} registers no study named {name!r}; it registers {_names(studies)}")
        return chosen[0]
    if len(studies) > 1:
        raise UserError(f"{spec} registers {len(studies)} studies ({_names(studies)}); choose one as "
                        f"{spec}:{studies[0].name}")
    return studies[0]


def lasting_source(spec: str) -> str:
    """`spec` as a later command can load it again from any folder (a resumed search): a file's
    path made absolute, `:NAME` kept; a module path as it is."""
    spec = spec.strip()
    if not _is_file(spec):
        return spec
    path, name = _split_file(spec)
    return str(path.resolve()) + (f":{name}" if name is not None else "")


def load_studies(spec: str) -> list[Study]:
    """Every study a file or module path registers (or the object it names), now registered."""
    if _is_file(spec):
        path, name = _split_file(spec)
        if name is not None:
            return [load_study_source(spec)]
        return _from_file(path)
    return _from_module(spec)


def load_installed() -> list[Study]:
    """The studies installed packages add: each entry point of the `hpsearch.studies` group names
    a Study, a list of them, or a module that registers its studies when imported
    (`[project.entry-points."hpsearch.studies"] mine = "my_package.studies"`). Loaded once."""
    global _installed
    if _installed is None:
        studies: list[Study] = []
        for point in sorted(metadata.entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
            try:
                studies += _from_module(point.value)
            except UserError as e:
                package = f" of {point.dist.name}" if point.dist is not None else ""
                raise UserError(f"entry point {point.name!r}{package} ({ENTRY_POINTS}): {e}") from None
        _installed = studies
    return list(_installed)


def _registered(name: str) -> Study | None:
    """A registered study of that name, looking through installed packages' studies as well."""
    if origin_of(name) is None and ":" not in name:
        load_installed()
    if origin_of(name) is not None:
        return get_study(name)
    if ":" in name or "." in name:
        return None  # a module path: the caller imports it
    raise UserError(f"unknown study {name!r}; known studies: {', '.join(list_studies())} (or give a file, "
                    f"./my_study.py, or a module path, my_package.my_module:study)")


def _is_file(spec: str) -> bool:
    head = spec.rpartition(":")[0] if spec.rpartition(":")[0].endswith(".py") else spec
    return head.endswith(".py") or "/" in head or head.startswith("~") or Path(head).expanduser().is_file()


def _split_file(spec: str) -> tuple[Path, str | None]:
    head, _, name = spec.rpartition(":")
    if head.endswith(".py") and name:
        return Path(head).expanduser(), name
    return Path(spec).expanduser(), None


def _names(studies: list[Study]) -> str:
    return ", ".join(s.name for s in studies)


def _failure(where: str, error: BaseException, path: Path | None = None) -> UserError:
    """One line for an exception the user's code raised: where in their file, and what."""
    line = ""
    if path is not None:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
        line = f", line {frames[-1].lineno}" if frames else ""
    text = str(error).splitlines()[0] if str(error) else ""
    return UserError(f"{where}{line}: {type(error).__name__}{': ' + text if text else ''}; fix it and try again")


def _from_file(path: Path) -> list[Study]:
    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a Python file that calls register_study(Study(...)), "
                        f"e.g. {EXAMPLE}")
    if path.suffix != ".py":
        raise UserError(f"{path} is not a Python file (.py); a study file calls register_study(Study(...)), "
                        f"e.g. {EXAMPLE}")
    path = path.resolve()
    module_name = f"hpsearch_study_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} cannot be loaded as a Python module; give a .py file")
    module = importlib.util.module_from_spec(spec)
    before = sys.modules.get(module_name)
    sys.modules[module_name] = module  # dataclasses and pickle look a function's module up by name
    sys.path.insert(0, str(path.parent))  # as for a script: its own folder's modules import
    try:
        with collecting() as found:
            spec.loader.exec_module(module)
    except UserError:
        _restore(module_name, before)
        raise
    except SyntaxError as e:
        _restore(module_name, before)
        raise UserError(f"{path}, line {e.lineno}: syntax error ({e.msg}); fix the file") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - whatever the user's code raises is reported, one line
        _restore(module_name, before)
        raise _failure(str(path), e, path) from None
    finally:
        sys.path.remove(str(path.parent))
    if not found:
        _restore(module_name, before)
        raise UserError(f"{path} registers no study; call register_study(Study(...)) in it, as {EXAMPLE} does")
    return _register(found, str(path))


def _restore(name: str, before: ModuleType | None) -> None:
    if before is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = before


def _from_module(spec: str) -> list[Study]:
    module_name, _, attr = spec.partition(":")
    if not all(part.isidentifier() for part in module_name.split(".")) or (attr and not all(
            part.isidentifier() for part in attr.split("."))):
        raise UserError(f"{spec!r} is not a module path; give my_package.my_module:study, a file such as "
                        "./my_study.py, or a registered study's name")
    fresh = module_name not in sys.modules
    try:
        with collecting() as found:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UserError(f"no module named {module_name!r}; install the package that has it, or check the "
                            "name (a file is given by its path: ./my_study.py)") from None
        raise UserError(f"{module_name} imports {e.name!r}, which is not installed; install it") from None
    except SyntaxError as e:
        raise UserError(f"{e.filename}, line {e.lineno}: syntax error ({e.msg}); fix the file") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - whatever the user's code raises is reported, one line
        raise _failure(f"importing {module_name}", e) from None
    if attr:
        obj: Any = module
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"module {module_name} has no {attr!r}; name a Study object in it "
                            f"({module_name}:NAME)") from None
        studies = _studies_in(obj, spec)
    elif found:
        studies = list(found)
    elif not fresh:  # imported before: what it registered then
        studies = [get_study(name) for name in list_studies() if origin_of(name) == module_name]
    else:
        studies = []
    if not studies:
        raise UserError(f"module {module_name} registers no study; call register_study(Study(...)) in it, or "
                        f"name the study: {module_name}:NAME")
    # What the module registered on import is the module's, whichever of its objects was named.
    _register(list(found) + [s for s in studies if all(s is not f for f in found)], module_name)
    return studies


def _studies_in(obj: Any, spec: str) -> list[Study]:
    if isinstance(obj, Study):
        return [obj]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(s, Study) for s in obj):
        return list(obj)
    raise UserError(f"{spec} is a {type(obj).__name__}, not a Study; name a Study object "
                    "(spaces.study.Study) or a list of them")


def _register(studies: list[Study], origin: str) -> list[Study]:
    """All of them or, at the first problem, none."""
    for study in studies:
        if not isinstance(study, Study):
            raise UserError(f"{origin} registers a {type(study).__name__}, not a Study; pass "
                            "register_study a spaces.study.Study")
    names = [s.name for s in studies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{origin} registers {', '.join(map(repr, twice))} more than once; give each study "
                        "its own name")
    for study in studies:
        if origin_of(study.name) not in (None, origin):
            add_study(study, origin)  # raises: the name is taken
    return [add_study(study, origin) for study in studies]
