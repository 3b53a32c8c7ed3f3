# syntax=docker/dockerfile:1
# The MLflow tracking server of docker/compose.yaml: PostgreSQL backend (psycopg2) and an
# S3-compatible artifact store (boto3). The server command and its flags live in compose.yaml.
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
ARG BOTO3_VERSION=1.44.8
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN pip install "mlflow==${MLFLOW_VERSION}" \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
        "boto3==${BOTO3_VERSION}" \
    && useradd --create-home --uid 10001 --user-group mlflow

USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000

CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
