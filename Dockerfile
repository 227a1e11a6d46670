# Images for the compose stack.
#   runtime (default): gateway and workers; ONNX Runtime only, no torch.
#     docker build --build-arg RUNTIME=gpu ...  uses onnxruntime-gpu for CUDA workers.
#   train: adds torch to build models into the shared repository volume.
FROM python:3.11-slim AS runtime
ARG RUNTIME=cpu
WORKDIR /app
COPY pyproject.toml README.md ./
COPY genserve ./genserve
COPY protos ./protos
COPY services ./services
COPY workers ./workers
COPY export ./export
RUN pip install --no-cache-dir ".[${RUNTIME}]"
ENV GENSERVE_MODEL_REPOSITORY=/models
EXPOSE 50051
CMD ["genserve", "serve", "--host", "0.0.0.0", "--port", "50051"]

FROM runtime AS train
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir ".[train]"
CMD ["genserve", "export", "vae"]
