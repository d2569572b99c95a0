#!/usr/bin/env bash
# Set up hpsearch on a fresh machine, then run a short real search.
#   bash setup.sh              # install, then search (6 trials x up to 2 epochs, a few minutes on a laptop CPU)
#   bash setup.sh --no-search  # install only (what CI does)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The exact versions CI tests, every file checked against its hash (requirements.lock, made from
# pyproject.toml's ranges by lock.sh; torch is the 2.14.1 build that runs on CPU and CUDA), then
# hpsearch itself, editable, with nothing more resolved.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .

# Debian ships Fashion-MNIST as a package: with it the first search needs no download at all.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } \
    >/dev/null 2>&1 || echo "note: Debian's dataset-fashion-mnist is not available; hpsearch will look for the data elsewhere"
fi

# Debian's chromium: the browser the MLflow UI test drives through Playwright (never `playwright
# install`, which downloads a browser build of its own). Without it that test is skipped, visibly.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } \
    >/dev/null 2>&1 || echo "note: Debian's chromium is not available; the MLflow UI browser test will be skipped"
fi

if [ "${1:-}" != "--no-search" ]; then
  .venv/bin/python -m search.run fashion_space --samples 6 --max-epochs 2 --name "quickstart-$(date +%Y%m%d-%H%M%S)"
fi
