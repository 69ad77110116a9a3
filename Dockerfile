# The training image: the pinned dependencies and the project, run as a non-root user.
#   CPU (default):  docker build -t cybulde .
#   CUDA:           docker build --build-arg TORCH_VARIANT=cu128 -t cybulde:cuda .
# Mount the project checkout at /workspace and run a stage, the whole pipeline or torchrun:
#   docker run --rm -v "$PWD:/workspace" cybulde train
#   docker run --rm --gpus all -v "$PWD:/workspace" cybulde:cuda repro
# No credentials are baked in: pass them at run time (e.g. GOOGLE_APPLICATION_CREDENTIALS with a
# mounted key file, MLFLOW_TRACKING_URI / MLFLOW_TRACKING_PASSWORD in the environment).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

# cpu: PyTorch's CPU build; cu128 (or another CUDA tag): the CUDA build, which ships its runtime.
ARG TORCH_VARIANT=cpu
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PATH=/opt/venv/bin:${PATH}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# git: DVC needs it to read the mounted checkout.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git=1:2.39.* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /bin/bash cybulde

WORKDIR /opt/cybulde
COPY requirements.lock pyproject.toml README.md LICENSE ./
COPY scripts/ scripts/
COPY src/ src/
# The same install script `make` and CI use.
RUN scripts/install.sh /opt/venv \
    && git config --system --add safe.directory /workspace

USER 10001
WORKDIR /workspace
ENTRYPOINT ["/opt/cybulde/scripts/docker-entrypoint.sh"]
CMD ["repro"]
