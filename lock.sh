#!/usr/bin/env bash
# Make the lock files from pyproject.toml's ranges; run it after changing a dependency there:
#   requirements.lock       hpsearch's dependencies and its test and bench extras: setup.sh and CI install it
#   k8s/requirements.lock   its dependencies and the cluster extra (Ray's dashboard and agent): the Docker image's
# Each pins every package, dependencies of dependencies included, to one version with the hashes of
# its files, so `pip install --require-hashes -r requirements.lock` installs exactly what was tested.
# pip-tools runs from a virtual environment of its own (.lock-tools), never the project's.
set -euo pipefail
cd "$(dirname "$0")"
TOOLS=.lock-tools
[ -x "$TOOLS/bin/pip-compile" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/python" -m pip install --quiet "pip-tools==7.7.0"; }

compile() {
  # --allow-unsafe: setuptools too, where a package needs it, or --require-hashes would refuse it;
  # no index URLs in the file: each machine's own pip configuration says where packages come from.
  CUSTOM_COMPILE_COMMAND="bash lock.sh" "$TOOLS/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
    --strip-extras --no-emit-index-url --no-emit-find-links "$@" pyproject.toml
}
compile --extra test --extra bench --output-file requirements.lock
# The image's file starts from the first one's pins (pip-compile keeps those that still fit and drops
# the rest), so that both install the same version of every package they share.
cp requirements.lock k8s/requirements.lock
compile --extra cluster --output-file k8s/requirements.lock
