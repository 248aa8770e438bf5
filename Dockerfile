# syntax=docker/dockerfile:1
# The shared model-wrapper image: one image serves every model; the watcher configures each
# Deployment with MODEL_NAME, MODEL_VERSION, MODEL_SOURCE, ... (see model_wrapper/README.md).
# Build from the repository root:
#   docker build -t registry.example.org/service-builder/model-wrapper:0.1.0 .
#
# Runtime images, for models that need more than scikit-learn (xgboost, lightgbm, a custom pyfunc's
# libraries): the same Dockerfile with extra requirements, named in the watcher's RUNTIME_IMAGES
# (e.g. RUNTIME_IMAGES=lightgbm=.../model-wrapper-gbm:0.1.0,xgboost=.../model-wrapper-gbm:0.1.0):
#   docker build --build-arg EXTRA_REQUIREMENTS="xgboost==2.1.4 lightgbm==4.6.0" -t .../model-wrapper-gbm:0.1.0 .
# or derive an image:
#   FROM registry.example.org/service-builder/model-wrapper:0.1.0
#   USER root
#   RUN pip install --no-cache-dir xgboost==2.1.4
#   USER 10001
# A model whose flavour's library the image lacks fails at start-up, naming the package and these fixes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="service-builder-model-wrapper" \
      org.opencontainers.image.description="Serves one MLflow model version as a typed, Swagger-documented HTTP API."

# HOME=/tmp: the cluster mounts the root filesystem read-only with /tmp as an emptyDir; the model
# is downloaded there. Bytecode is compiled at build time, so nothing writes it at run time.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/tmp \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Wheels only: the slim base has no compiler, and every pinned package ships one.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --only-binary=:all: -r /tmp/requirements.txt \
 && pip check \
 && rm /tmp/requirements.txt

ARG EXTRA_REQUIREMENTS=""
RUN if [ -n "${EXTRA_REQUIREMENTS}" ]; then pip install ${EXTRA_REQUIREMENTS} && pip check; fi

WORKDIR /app
COPY model_wrapper/ /app/model_wrapper/
# skops' default trusted types, computed once here rather than at every start (model_wrapper/loading/skops_trust.py;
# an image that changes scikit-learn, skops, SciPy or NumPy later computes them at start, as before).
ENV SKOPS_TRUST_CACHE=/app/skops-trusted-types.json
RUN python -m compileall -q /app/model_wrapper \
 && python -m model_wrapper.loading.skops_trust \
 && groupadd --gid 10001 wrapper \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin wrapper

USER 10001:10001
# WORKERS: server processes per pod (each loads the model); prefer more replicas to more workers.
ENV PORT=8080 \
    WORKERS=1 \
    LOG_FORMAT=json
EXPOSE 8080
CMD ["python", "-m", "model_wrapper"]
