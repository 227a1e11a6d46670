# Images for the compose stack (docker-compose.yml), in stages:
#   wheel    builds genserve's wheel (build tools stay in this stage)
#   runtime  gateway and workers: ONNX Runtime, no torch (checked at build time)
#              --build-arg RUNTIME=gpu: onnxruntime-gpu with CUDA 12 / cuDNN 9 from pip
#   ops      runtime + Flower (the compose `ops` profile)
#   train    runtime + torch: builds models into the shared repository volume (scripts/models.sh)
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY genserve ./genserve
COPY protos ./protos
COPY services ./services
COPY workers ./workers
COPY export ./export
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim AS runtime
ARG RUNTIME=cpu
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/genserve-*.whl)[${RUNTIME}]" \
 && if [ "$RUNTIME" = gpu ]; then pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]"; fi \
 && python -c "import importlib.util, sys; sys.exit('torch must not be in the runtime image' if importlib.util.find_spec('torch') else 0)"
# The CUDA/cuDNN libraries of the nvidia-* wheels (GPU build only; absent paths are ignored).
ENV LD_LIBRARY_PATH=/usr/local/lib/python3.11/site-packages/nvidia/cudnn/lib:/usr/local/lib/python3.11/site-packages/nvidia/cublas/lib:/usr/local/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/usr/local/lib/python3.11/site-packages/nvidia/cufft/lib:/usr/local/lib/python3.11/site-packages/nvidia/curand/lib:/usr/local/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib
# A user of its own; /models and /jobs exist and are its, so fresh named volumes are too.
RUN useradd --create-home --uid 1000 genserve && mkdir -p /models /jobs && chown genserve /models /jobs
USER genserve
WORKDIR /home/genserve
ENV GENSERVE_MODEL_REPOSITORY=/models GENSERVE_JOBS__ROOT=/jobs PYTHONUNBUFFERED=1
EXPOSE 50051
CMD ["genserve", "gateway", "--host", "0.0.0.0", "--port", "50051"]

FROM runtime AS ops
USER root
RUN pip install --no-cache-dir "$(ls /wheels/genserve-*.whl)[ops]"
USER genserve
CMD ["celery", "-A", "genserve.workers.celery_app", "flower", "--port=5555"]

FROM runtime AS train
USER root
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir "$(ls /wheels/genserve-*.whl)[train]"
COPY scripts /app/scripts
USER genserve
WORKDIR /app
CMD ["scripts/models.sh"]
