#!/bin/sh
# The image's entrypoint (/usr/bin/tf_serving_entrypoint.sh, TF Serving's name for it): one image, two contracts.
#
# * TF Serving's: `tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME}
#   --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"` when the arguments are TF Serving flags (a manifest
#   written for tensorflow/serving that sets `args:` only), or when only the image's default `serve` is left and
#   nothing configures rtserve (a manifest that sets env only). Later flags win, so `--port=9000` in the
#   arguments replaces the 8500 above, as in TF Serving.
# * rtserve's: `rtserve "$@"` for a subcommand (the chart passes `serve` with RTSERVE_REPOSITORY set).
# * `tensorflow_model_server ...` as the first argument runs that command line as it is.
set -eu

tf_serving() {
    exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
        "--model_name=${MODEL_NAME:-model}" "--model_base_path=${MODEL_BASE_PATH:-/models}/${MODEL_NAME:-model}" "$@"
}

rtserve_configured() {
    [ -n "${RTSERVE_REPOSITORY:-}${RTSERVE_MODEL_CONFIG_LIST:-}${RTSERVE_MODEL_CONFIG_FILE:-}" ]
}

case "${1:-}" in
    -*) tf_serving "$@" ;;
    tensorflow_model_server | /usr/bin/tensorflow_model_server) shift; exec tensorflow_model_server "$@" ;;
    "") rtserve_configured && exec rtserve serve; tf_serving ;;
    serve) if [ "$#" -eq 1 ] && ! rtserve_configured; then tf_serving; fi; exec rtserve "$@" ;;
    *) exec rtserve "$@" ;;
esac
