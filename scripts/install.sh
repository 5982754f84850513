#!/usr/bin/env bash
# Install duomem with everything the demo and the tests use, into the active Python environment (and Java for
# ScienceWorld, with apt where it is missing).
# llama-cpp-python and TextWorld build from source on first install (~15 min on 2 cores); pip caches the wheels.
# Usage: bash scripts/install.sh [model ...]   (default models: smollm2-135m qwen2.5-coder-0.5b)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
python -m pip install torch==2.13.0          # the CPU build; on a GPU machine install your CUDA torch first
python -m pip install -e ".[all,scienceworld]"
if ! command -v java > /dev/null; then         # ScienceWorld's simulator runs on Java
  if command -v apt-get > /dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq default-jre-headless; } \
      || echo "warning: apt could not install default-jre-headless: install a Java runtime to play ScienceWorld"
  else
    echo "warning: no java: install a Java runtime (8 or later) to play ScienceWorld"
  fi
fi
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2-135m qwen2.5-coder-0.5b)
duomem models install "${models[@]}"
