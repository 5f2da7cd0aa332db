# The collab server image: `docker build -t collab .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY crdt ./crdt
COPY persistence ./persistence
COPY server ./server
COPY loadtests ./loadtests
RUN pip install --no-cache-dir . && useradd --system --create-home collab
USER collab
ENV COLLAB_HOST=0.0.0.0 COLLAB_DATA_DIR=/home/collab/data
EXPOSE 8765
CMD ["collab", "serve"]
