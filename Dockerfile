# The training image: the pinned dependencies and the project, run as a non-root user.
#   CPU (default):  make image                   (docker where it exists, else podman: infra/image/build.sh)
#                   docker build -t cybulde .
#   CUDA:           docker build --build-arg TORCH_VARIANT=cu128 -t cybulde:cuda .
# Mount the project checkout (owned by uid 10001) at /workspace and run a stage, the whole pipeline
# or torchrun:
#   docker run --rm -v "$PWD:/workspace" cybulde train
#   docker run --rm --gpus all -v "$PWD:/workspace" cybulde:cuda repro
# No credentials are baked in: pass them at run time (e.g. GOOGLE_APPLICATION_CREDENTIALS with a
# mounted key file, MLFLOW_TRACKING_URI / MLFLOW_TRACKING_PASSWORD in the environment).
#
# Build options for machines that reach neither Docker Hub nor PyTorch's index, or sit behind a
# proxy that re-signs TLS; none of them stays in the image (infra/image/README.md):
#   --build-arg PYTHON_IMAGE=IMAGE       another Python 3.11 base (infra/image/python-base.sh builds one)
#   --build-arg TORCH_INDEX_URL=URL      where pip finds torch's TORCH_VARIANT build ('': PyPI only)
#   --secret id=pip-ca-bundle,src=FILE   a CA bundle for pip's downloads
#   a wheel folder mounted at /run/build/wheels (podman build -v DIR:/run/build/wheels:ro)
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

# cpu: PyTorch's CPU build; cu128 (or another CUDA tag): the CUDA build, which ships its runtime.
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_LINK_MODE=copy \
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

# The same install script `make` and CI use, in two layers: the locked dependencies (rebuilt only
# when the lock changes), then the project. Each RUN turns the build options into pip settings for
# itself only, which the script hands to uv; uv's downloads stay in a build cache, outside the image,
# and are copied from there (a cache mount is another file system: no hard links).
WORKDIR /opt/cybulde
COPY requirements.lock ./
COPY scripts/install.sh scripts/pip-setting.sh scripts/compile_bytecode.py scripts/
RUN --mount=type=secret,id=pip-ca-bundle --mount=type=cache,target=/root/.cache/uv \
    if [[ -n "${TORCH_INDEX_URL}" ]]; then export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && if [[ -f /run/secrets/pip-ca-bundle ]]; then export PIP_CERT=/run/secrets/pip-ca-bundle; fi \
    && if [[ -d /run/build/wheels ]]; then export PIP_FIND_LINKS=/run/build/wheels; fi \
    && scripts/install.sh /opt/venv --dependencies-only --all-bytecode
COPY pyproject.toml README.md LICENSE ./
COPY scripts/ scripts/
COPY src/ src/
RUN --mount=type=secret,id=pip-ca-bundle --mount=type=cache,target=/root/.cache/uv \
    if [[ -n "${TORCH_INDEX_URL}" ]]; then export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && if [[ -f /run/secrets/pip-ca-bundle ]]; then export PIP_CERT=/run/secrets/pip-ca-bundle; fi \
    && if [[ -d /run/build/wheels ]]; then export PIP_FIND_LINKS=/run/build/wheels; fi \
    && scripts/install.sh /opt/venv --all-bytecode \
    && git config --system --add safe.directory /workspace

USER 10001
WORKDIR /workspace
ENTRYPOINT ["/opt/cybulde/scripts/docker-entrypoint.sh"]
CMD ["repro"]
