# syntax=docker/dockerfile:1
#
# The three online services (docs/architecture.md#one-dockerfile-three-targets): ONE Dockerfile, three final targets, one image each:
#
#   docker build -f docker/services.Dockerfile --target gateway    -t pcam-gateway:0.1.0 .
#   docker build -f docker/services.Dockerfile --target preprocess -t pcam-preprocess:0.1.0 .
#   docker build -f docker/services.Dockerfile --target ensemble   -t pcam-ensemble:0.1.0 .
#
# Why one file: the three services are one Python distribution with one dependency set (the `serve`
# extra, no torch), pinned by requirements/constraints.txt. Every target starts FROM the same `runtime`
# stage, so the dependency layer (/opt/venv) is built once and is the same layer in all three images: a
# registry stores it once and a node pulls it once. Only the small last layers (ENV, EXPOSE, HEALTHCHECK,
# CMD) differ. The code (/app/services) is its own layer on top of the dependencies, so a code change
# rebuilds and ships a few hundred kilobytes, not the virtualenv.
#
# Runtime contract (docker-compose.yml, helm/): runs as uid/gid 10001 on a read-only root filesystem;
# only /tmp must be writable (an emptyDir or tmpfs: numba's cache goes there). Each service reads
# PCAM_<SERVICE>_* settings (services/<name>/settings.py) and OTEL_* for tracing
# (services/common/tracing.py). preprocess and ensemble read /models/release.json: mount the model
# repository there read-only. tests/integration/test_image_commands.py runs every target's CMD,
# ENV and HEALTHCHECK locally (no Docker engine needed).

############################################################################
# builder: a virtualenv with the pinned dependencies of the `serve` extra
############################################################################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what resolving the dependencies needs: pyproject.toml (the `serve` extra), README.md (its readme),
# the core's pyproject.toml (the platform depends on that distribution) and the pins. No code: a change
# under pcam_core/, services/, tests/ or training/ never invalidates this layer.
COPY pyproject.toml README.md ./
COPY pcam_core/pyproject.toml pcam_core/
COPY requirements/ requirements/
# A non-editable install of ".[serve]" and the core with every version pinned by the constraints file.
# The packages are empty stand-ins here and are uninstalled right after: the code ships as its own layer
# (/app) in the runtime stage, so this venv holds dependencies only. pip byte-compiles what it installs.
# The build backend comes pinned from requirements/build.txt, not from pip's isolated build environment
# (which would fetch the newest setuptools and wheel): every input of the image is pinned.
RUN mkdir services && touch services/__init__.py pcam_core/__init__.py \
    && pip install --no-cache-dir -c requirements/build.txt setuptools wheel \
    && pip install --no-cache-dir --no-build-isolation -c requirements/constraints.txt ./pcam_core ".[serve]" \
    && pip uninstall --yes pcam-platform pcam-platform-core

############################################################################
# runtime: what the three service images share
############################################################################
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="pcam-platform services" \
      org.opencontainers.image.description="PCam tumor-detection inference services. Research use only: not for diagnosis." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# No compiler, no pip cache, no apt packages: the slim base plus the venv and the code.
RUN groupadd --system --gid 10001 pcam \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pcam

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY pcam_core/ /app/pcam_core/
COPY services/ /app/services/
# Byte-compile at build time: the root filesystem is read-only at run time (and PYTHONDONTWRITEBYTECODE).
RUN python -m compileall -q -j 0 /app/pcam_core /app/services

USER 10001:10001

############################################################################
# gateway: public API on 8080 (services/gateway)
############################################################################
FROM runtime AS gateway
ENV PCAM_GATEWAY_HOST=0.0.0.0 \
    PCAM_GATEWAY_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "gateway"]
CMD ["python", "-m", "services.gateway"]

############################################################################
# preprocess: decoding, validation, Macenko on 8081 (services/preprocess)
############################################################################
FROM runtime AS preprocess
ENV PCAM_PREPROCESS_HOST=0.0.0.0 \
    PCAM_PREPROCESS_PORT=8081 \
    PCAM_PREPROCESS_MODEL_REPOSITORY=/models
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "preprocess"]
CMD ["python", "-m", "services.preprocess"]

############################################################################
# ensemble: Triton members, calibration, operating points on 8082 (services/ensemble)
############################################################################
FROM runtime AS ensemble
ENV PCAM_ENSEMBLE_HOST=0.0.0.0 \
    PCAM_ENSEMBLE_PORT=8082 \
    PCAM_ENSEMBLE_MODEL_REPOSITORY=/models
EXPOSE 8082
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck", "ensemble"]
CMD ["python", "-m", "services.ensemble"]
