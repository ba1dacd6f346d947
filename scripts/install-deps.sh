#!/usr/bin/env bash
# Installs every Debian 12 package the JetMoE runtime needs to build and test.
# Run as root (or through sudo); never prompts.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  build-essential cmake pkg-config
  ccache                                # scripts/test.sh: the CUDA build reuses the release build's objects
  libopenblas-openmp-dev libopenblas0-openmp  # dense GEMM, OpenMP threading flavour
  libeigen3-dev                         # small dense helpers in tests
  nlohmann-json3-dev                    # config.json, safetensors headers, JSON output
  libsentencepiece-dev                  # tokenizer.model
  libcli11-dev                          # command-line parsing
  libcpp-httplib-dev                    # jetmoe serve
  libedit-dev                           # jetmoe chat line editing
  googletest libgtest-dev libgmock-dev  # tests
  libbenchmark-dev                      # bench/ micro-benchmarks
  git                                   # bench/: jetmoe_kernel_ab extracts its base revision's kernels
  clang libclang-rt-14-dev              # libFuzzer targets and sanitizer runs
  python3                               # small helper scripts in tests
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps.sh: run as root (apt-get needs it)" >&2; exit 1; fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
echo "install-deps.sh: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Make sure the OpenMP flavour of OpenBLAS is the one libblas/liblapack resolve to.
if command -v update-alternatives >/dev/null 2>&1; then
  for alt in libopenblas.so.0-x86_64-linux-gnu libblas.so.3-x86_64-linux-gnu; do
    path=$(update-alternatives --list "$alt" 2>/dev/null | grep openmp | head -n1 || true)
    [ -n "$path" ] && $SUDO update-alternatives --set "$alt" "$path" >/dev/null 2>&1 || true
  done
fi
