# llmd-kserve: the router, the simulated vLLM engine and every other subcommand, in one image.
#   docker build -t ghcr.io/llmd-kserve/llmd-kserve:0.1.0 .
#   docker run --rm -p 8000:8000 ghcr.io/llmd-kserve/llmd-kserve:0.1.0 engine          # a simulated vLLM replica
#   docker run --rm -p 8080:8080 ghcr.io/llmd-kserve/llmd-kserve:0.1.0 router --endpoints http://host:8000
# In KServe the rendered manifests (manifests/, `llmd-kserve render`) run it as the router InferenceService and,
# in sim mode, as the engine ServingRuntime; the Gateway overlay runs it as the Endpoint Picker (`epp`), and the
# Kubeflow pipeline components use it as their base image. Real GPU engines use the vLLM image instead.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmd_kserve ./llmd_kserve
COPY pipelines ./pipelines
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[kube,pipelines,gateway,report,redis]'

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'llmd-kserve[kube,pipelines,gateway,report,redis]' \
 && useradd --uid 1000 --create-home --shell /usr/sbin/nologin llmd
USER 1000
WORKDIR /home/llmd
# 8000: engine HTTP (OpenAI API, /metrics, /health); 5557: engine KV events (ZMQ PUB); 8080: router HTTP;
# 9002/9090: EPP gRPC (ext_proc, health) and metrics
EXPOSE 8000 5557 8080 9002 9090
ENTRYPOINT ["llmd-kserve"]
CMD ["--help"]
