#!/usr/bin/env bash
# Start real TensorFlow Serving on the GPU: the pinned tensorflow/serving:<version>-gpu image with
# --gpus all when a Docker engine is reachable, else tensorflow_model_server from PATH. Prints the
# exact command, then replaces itself with it. Without either, exits 1 with one line that names the
# local server (`make serve`). The command is built by xception_serving.launch_tfserving (one place for
# flags); this script finds a Python to run it with and passes the repository's paths.
#
#   serving/run-tfserving.sh [--mode auto|docker|binary] [--model-base-path DIR] [--dry-run]
#                            [--gpu-memory-fraction F] [--ssl-config-file FILE] [-- TFS_FLAGS...]
#   env: MODEL_BASE_PATH (default models/xception), SSL_CONFIG (rendered ssl.config)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

# The project's virtualenv when installed; otherwise any python3 with the sources on the path (the
# launcher needs only the standard library and the contract package), so a bare GPU host with
# Docker works too.
if [[ -x "$root/.venv/bin/python" ]]; then
  python="$root/.venv/bin/python"
elif command -v python3 >/dev/null 2>&1; then
  python="$(command -v python3)"
  export PYTHONPATH="$here/src:$root/contract/src${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "run-tfserving: python3 is needed to build the TF Serving command; install it or run \`make install\`" >&2
  exit 1
fi

action=run
if [[ "${1:-}" == "command" || "${1:-}" == "run" ]]; then
  action="$1"
  shift
fi
# The repository's paths, absolute, so this works from any directory; the caller's own options come
# after them and win.
exec "$python" -m xception_serving.launch_tfserving "$action" \
  --config-dir "$here" --work-dir "$root/build/tfserving" \
  --model-base-path "${MODEL_BASE_PATH:-$root/models/xception}" "$@"
