# syntax=docker/dockerfile:1
#
# Triton for the CPU serving target (docs/architecture.md#cpu-triton-image-from-the-nvidia-pytriton-wheel): the model repository that
# `pcam build-repository --target cpu` writes (python backend running model.onnx with onnxruntime,
# KIND_CPU). Workstations (docker compose, the default profile), CI and clusters without GPUs.
#
#   docker build -f docker/triton-cpu.Dockerfile -t pcam-triton-cpu:0.1.0 .
#
# The GPU target needs no Dockerfile: it runs the stock nvcr.io/nvidia/tritonserver:24.10-py3 image
# (onnxruntime backend + TensorRT accelerator) on a repository built with `--target gpu`.
#
# Why not FROM nvcr.io/nvidia/tritonserver:24.10-py3 here: that image's python backend runs the
# system Python 3.10, and requirements/triton.txt (the one source of pins for Triton's Python
# environment, `make lock`) pins onnxruntime==1.32.0, which publishes no cp310 wheels (the last is
# 1.23.2); pins for 3.10 would be a second, untested set. Instead this image runs exactly what
# `make run` and the integration tests run: Triton 2.51 (= NGC 24.10) as shipped in the
# nvidia-pytriton wheel, with its python-backend stub for Python 3.11, in a virtualenv installed from
# requirements/triton.txt (numpy<2, which the 2.51 stub needs, and onnxruntime). Same layout as
# devstack/triton.py. About 1 GB instead of the NGC image's ~15 GB (CUDA, TensorRT, every backend).
#
# Runtime contract: non-root uid/gid 1000 (`triton-server`, the same uid as in the NGC images, so one
# securityContext fits both); read-only root filesystem works (the python backend uses /dev/shm: give
# it some, e.g. compose `shm_size: 256m`); the repository is mounted at /models. Ports: HTTP 8000,
# gRPC 8001, metrics 8002. The CMD has no tracing flags: add `--trace-config ...` where a collector
# exists (docker-compose.yml does).

############################################################################
# builder: Triton's own virtualenv (tritonserver binary, numpy<2, onnxruntime), every version pinned
############################################################################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/triton.txt requirements/triton.txt
RUN python -m venv /opt/triton-venv \
    && /opt/triton-venv/bin/pip install --no-cache-dir -c requirements/triton.txt \
       nvidia-pytriton numpy onnxruntime

# The python backend plus the stub built for this Python, in the layout --backend-directory expects
# (devstack/triton.py, TritonInstall.backend_directory, does the same for `make run`).
RUN site=$(/opt/triton-venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && version=$(/opt/triton-venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    && mkdir -p /opt/tritonserver/backends \
    && cp -r "$site/pytriton/tritonserver/backends/python" /opt/tritonserver/backends/python \
    && cp "$site/pytriton/tritonserver/python_backend_stubs/$version/triton_python_backend_stub" \
       /opt/tritonserver/backends/python/triton_python_backend_stub \
    && test -x /opt/tritonserver/backends/python/triton_python_backend_stub

############################################################################
# runtime
############################################################################
FROM python:3.11.14-slim-bookworm AS triton-cpu

LABEL org.opencontainers.image.title="pcam-platform Triton (CPU target)" \
      org.opencontainers.image.description="Triton 2.51 with the python backend, numpy<2 and onnxruntime. Research use only: not for diagnosis." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

RUN groupadd --gid 1000 triton-server \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin triton-server

COPY --from=builder /opt/triton-venv /opt/triton-venv
COPY --from=builder /opt/tritonserver /opt/tritonserver

# The stub finds its interpreter (and so numpy and onnxruntime) as `python3` on PATH (docs/architecture.md#local-runtime-without-docker).
ENV PATH=/opt/triton-venv/bin:/opt/triton-venv/lib/python3.11/site-packages/pytriton/tritonserver/bin:$PATH \
    LD_LIBRARY_PATH=/opt/triton-venv/lib/python3.11/site-packages/nvidia_pytriton.libs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 1000:1000
WORKDIR /home/triton-server
EXPOSE 8000 8001 8002
# Ready = every model in the repository loaded (--strict-readiness). No curl in slim images: Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
# Poll: a release rolled into the repository (`pcam package --rolling`) loads as new model versions
# while the previous ones keep serving (docs/architecture.md#rolling-releases).
CMD ["tritonserver", \
     "--model-repository=/models", \
     "--backend-directory=/opt/tritonserver/backends", \
     "--model-control-mode=poll", \
     "--repository-poll-secs=5", \
     "--strict-readiness=true", \
     "--exit-on-error=true", \
     "--log-verbose=0"]
