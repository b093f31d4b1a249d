# Image for the worker and server services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system streams
USER streams
ENV STREAMS_DATA_DIR=/tmp/streams
