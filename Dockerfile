# The image compose.yaml runs: comfyq with Flower. GPU nodes that need torch add it on top.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir ".[flower,nvml]"
ENV COMFYQ_DATA_DIR=/data
CMD ["comfyq", "worker"]
