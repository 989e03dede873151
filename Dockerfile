# syntax=docker/dockerfile:1
#
# rtserve image: a virtualenv with rtserve and its dependencies on a slim Python 3.11, run as a numeric non-root
# user, fit for a read-only root filesystem (the model cache and /tmp are volumes).
#
#   docker build -t rtserve .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp:mode=1777 --tmpfs /var/cache/rtserve:mode=1777 \
#     -e RTSERVE_REPOSITORY=s3://models -e RTSERVE_S3__ENDPOINT_URL=http://minio:9000 rtserve
#
# It is also a drop-in for tensorflow/serving (docs/migrating-from-tf-serving.md, "The image swap"): the entrypoint
# /usr/bin/tf_serving_entrypoint.sh runs TF Serving's command line (gRPC 8500, REST 8501, MODEL_NAME and
# MODEL_BASE_PATH, extra arguments appended) when given TF Serving flags or when nothing configures rtserve, and
# `rtserve <subcommand>` otherwise; /usr/bin/tensorflow_model_server is where KServe's runtimes call it.
#
#   docker run --rm -p 8501:8501 -v "$PWD/half_plus_two:/models/half_plus_two" -e MODEL_NAME=half_plus_two rtserve
#
# The base is pinned by the digest of the python:3.11-slim-bookworm image index; refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and update both FROM lines together.

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/rtserve

WORKDIR /src

# Dependencies first, from pyproject.toml alone (they are pinned there), so that source edits reuse this layer.
# One resolver run: `tensorflow` (CPU kernels on a host without CUDA; no CUDA wheels without its `and-cuda` extra)
# and tensorflow-serving-api, which requires that distribution by name.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && /opt/rtserve/bin/pip install --requirement requirements.txt

# Then the project itself, as a wheel built alone; installing it offline resolves its requirements against the
# ones above (nothing new is fetched), and pip check fails the build on any conflict.
COPY README.md ./
COPY service ./service
RUN /opt/rtserve/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/rtserve/bin/pip install --no-index --find-links /tmp/wheels rtserve \
    && /opt/rtserve/bin/pip check


FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

LABEL org.opencontainers.image.title="rtserve" \
      org.opencontainers.image.description="Real-time TensorFlow model server (TF Serving REST and KServe V2)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric user (the chart's runAsUser) that owns nothing but the cache directory.
RUN groupadd --system --gid 10001 rtserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rtserve \
    && mkdir -p /var/cache/rtserve \
    && chown 10001:10001 /var/cache/rtserve

COPY --from=builder /opt/rtserve /opt/rtserve
COPY --from=builder --chmod=0755 /src/service/compat/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
RUN ln -s /opt/rtserve/bin/tensorflow_model_server /usr/bin/tensorflow_model_server

ENV PATH=/opt/rtserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    RTSERVE_CACHE_DIR=/var/cache/rtserve \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=model

# No RTSERVE_HOST/PORT/GRPC_PORT here: rtserve's defaults are the chart's (0.0.0.0, 8080, 8081), and a variable
# set in the image would override TF Serving's defaults under tensorflow_model_server (gRPC 8500, REST off).
USER 10001:10001
WORKDIR /tmp
# rtserve's REST and gRPC (the chart's), then TF Serving's gRPC and REST.
EXPOSE 8080 8081 8500 8501

# For plain `docker run`; Kubernetes ignores it and uses the chart's probes. Live on rtserve's REST port, or on
# TF Serving's when the image runs as TF Serving.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u\nfor p in (os.environ.get('RTSERVE_PORT', '8080'), '8501'):\n  try: u.urlopen('http://127.0.0.1:' + p + '/v2/health/live', timeout=1); raise SystemExit(0)\n  except OSError: pass\nraise SystemExit(1)"]

ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
CMD ["serve"]
