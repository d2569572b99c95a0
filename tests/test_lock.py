"""The lock files are what gets installed, and they still match pyproject.toml: every package pinned
to one version with its hashes, every range of pyproject.toml met (an edit there without
`bash lock.sh` fails here), the two files agreeing on what they share, and setup.sh (so CI) and
the Docker image installing from them."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

LOCKS = {"requirements.lock": ("test", "bench"), "k8s/requirements.lock": ("cluster",)}


def locked(path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    text = re.sub(r"\\\n", " ", (REPO / path).read_text())
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("--hash") else line.strip()
        if not line or line.startswith("-"):
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        pins[canonicalize_name(name)] = (version, [o.removeprefix("--hash=") for o in options])
    return pins


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] +
            [r for extra in extras for r in project["optional-dependencies"][extra]]]


@pytest.mark.parametrize("path", LOCKS)
def test_every_package_is_pinned_with_hashes_and_meets_pyproject(path):
    pins = locked(path)
    assert len(pins) > 50
    for name, (version, hashes) in pins.items():
        assert re.fullmatch(r"[\w.+!]+", version), (name, version)
        assert hashes and all(h.startswith("sha256:") and len(h) == 7 + 64 for h in hashes), name
    for requirement in wanted(LOCKS[path]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {path}: run bash lock.sh"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"{path} has {name}=={pins[name][0]}, pyproject.toml asks {requirement}: run bash lock.sh"
    assert pins["torch"][0] == "2.14.1" and pins["torchvision"][0] == "0.29.1"


def test_both_files_install_the_same_version_of_what_they_share():
    local, image = locked("requirements.lock"), locked("k8s/requirements.lock")
    assert {n: v for n, (v, _) in image.items() if n in local and local[n][0] != v} == {}
    assert "pytest" not in image and "aiohttp-cors" not in local  # the test tools, Ray's dashboard


def test_setup_ci_and_the_image_install_from_the_lock_files():
    setup = (REPO / "setup.sh").read_text()
    assert "--require-hashes -r requirements.lock" in setup and "--no-deps -e ." in setup
    assert "bash setup.sh --no-search" in (REPO / ".ci" / "run").read_text()
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    assert "--require-hashes -r k8s/requirements.lock" in dockerfile and "--no-deps ." in dockerfile
    assert "-e ." not in dockerfile  # installed, not editable
