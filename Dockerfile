# The image compose.yaml runs: comfyq with its HTTP API, S3 storage, Flower and NVML. GPU nodes
# that need torch add it on top.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 COMFYQ_DATA_DIR=/data

# A user of its own: nothing in the container runs as root.
RUN useradd --create-home --uid 10001 comfyq && mkdir /data && chown comfyq /data

WORKDIR /app
# Dependencies first, from pyproject.toml alone: a change to the source reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = project['optional-dependencies']; \
print('\n'.join(project['dependencies'] + [d for e in ('api', 's3', 'flower', 'nvml') for d in extras[e]]))" \
    > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps ".[api,s3,flower,nvml]"

USER comfyq
CMD ["comfyq", "worker"]
