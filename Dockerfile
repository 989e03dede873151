# syntax=docker/dockerfile:1
#
# rtserve image: a virtualenv with rtserve and its dependencies on a slim Python 3.11, run as a numeric non-root
# user, fit for a read-only root filesystem (the model cache and /tmp are volumes).
#
#   docker build -t rtserve .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp:mode=1777 --tmpfs /var/cache/rtserve:mode=1777 \
#     -e RTSERVE_REPOSITORY=s3://models -e RTSERVE_S3__ENDPOINT_URL=http://minio:9000 rtserve
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

ENV PATH=/opt/rtserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    RTSERVE_HOST=0.0.0.0 \
    RTSERVE_PORT=8080 \
    RTSERVE_GRPC_PORT=8081 \
    RTSERVE_CACHE_DIR=/var/cache/rtserve

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081

# For plain `docker run`; Kubernetes ignores it and uses the chart's probes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RTSERVE_PORT', '8080') + '/v2/health/live', timeout=2)"]

ENTRYPOINT ["rtserve"]
CMD ["serve"]
