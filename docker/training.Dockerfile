# syntax=docker/dockerfile:1
#
# The offline training package and `pcam` CLI (training/) on CUDA: train, calibrate, export and build
# the Triton model repository on a GPU machine.
#
#   docker build -f docker/training.Dockerfile -t pcam-training:0.1.0 .
#   docker run --rm --gpus all --shm-size 8g -u "$(id -u):$(id -g)" \
#       -v "$PWD/work:/work" pcam-training:0.1.0 \
#       build-repository --config pcam-gpu --workdir /work/run --output /work/model_repository --target gpu
#
# CUDA comes with torch: the PyPI wheels pinned in requirements/constraints.txt bundle the CUDA runtime,
# cuDNN and NCCL (the nvidia-* wheels), so a python slim base suffices; the host needs only an NVIDIA
# driver new enough for that CUDA (13.x) and the NVIDIA container toolkit (`--gpus`). Without a GPU the
# same image trains on CPU.
#
# Volumes (nothing is declared with VOLUME, so nothing is created behind your back; mount these):
#   /work          working directory (WORKDIR): run work directories (`--workdir`), PCam files
#                  (`pcam data download --output /work/data`), MLflow stores (`mlruns`, relative to
#                  the config), the model repository written by `--output`. Must be writable by the
#                  user the container runs as (default uid 10001; `-u "$(id -u):$(id -g)"` to match
#                  the host's owner of the mounted folder).
#   /tmp           scratch (numba and matplotlib caches); mount a tmpfs with a read-only root.
# DataLoader workers share tensors through /dev/shm: give the container a large --shm-size.

############################################################################
# builder: a virtualenv with the pinned dependencies of the `train` (+ `serve`) extras and the package
############################################################################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first (empty stand-in packages resolve the extras): code changes keep this layer.
# `serve` rides along with `train`: `pcam data download` needs httpx and training imports the
# preprocess service's stain normalization (docs/architecture.md#stain-normalization). The core and the
# client are distributions of their own (pcam_core/pyproject.toml, pcam_client/pyproject.toml).
COPY pyproject.toml README.md ./
COPY pcam_core/pyproject.toml pcam_core/
COPY pcam_client/pyproject.toml pcam_client/README.md pcam_client/
COPY requirements/ requirements/
RUN mkdir services training \
    && touch services/__init__.py training/__init__.py pcam_core/__init__.py pcam_client/__init__.py \
    && pip install --no-cache-dir -c requirements/build.txt setuptools wheel \
    && pip install --no-cache-dir --no-build-isolation -c requirements/constraints.txt ./pcam_core ./pcam_client ".[train,serve]" \
    && pip uninstall --yes pcam-platform pcam-platform-core pcam-platform-client \
    && rm -rf services training pcam_core pcam_client
COPY pcam_core/ pcam_core/
COPY services/ services/
COPY training/ training/
COPY pcam_client/ pcam_client/
RUN pip install --no-cache-dir --no-deps --no-build-isolation -c requirements/constraints.txt ./pcam_core ./pcam_client ".[train,serve]"

############################################################################
# runtime
############################################################################
FROM python:3.11.14-slim-bookworm AS training

LABEL org.opencontainers.image.title="pcam-platform training" \
      org.opencontainers.image.description="Training, calibration, export and model-repository builder (pcam CLI). Research use only: not for diagnosis." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

RUN groupadd --system --gid 10001 pcam \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /work \
       --shell /usr/sbin/nologin pcam \
    && mkdir -p /work \
    && chown 10001:10001 /work

COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/work \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib

USER 10001:10001
WORKDIR /work
# A batch job, not a server: nothing to probe. (Explicit, so no base image's check is inherited.)
HEALTHCHECK NONE
ENTRYPOINT ["pcam"]
CMD ["--help"]
