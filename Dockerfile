# syntax=docker/dockerfile:1
# The bulkops image: worker, beat, Flower and the `bulkops` CLI (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 bulkops \
    && useradd --system --uid 10001 --gid bulkops --home-dir /app \
       --no-create-home --shell /usr/sbin/nologin bulkops

# /app stays the working directory: `bulkops migrate` finds alembic.ini and
# migrations/ here.
WORKDIR /app

COPY pyproject.toml README.md alembic.ini celeryconfig.py ./
COPY worker/ worker/
COPY tasks/ tasks/
COPY migrations/ migrations/

# fsspec is small and pure Python, so the image can always read an upload store;
# the scheme's package comes in at build time: --build-arg STORE_PACKAGES=s3fs
# (or gcsfs) for BULKOPS_UPLOAD_STORE=s3://… (gs://…).
ARG STORE_PACKAGES=""
RUN pip install --no-cache-dir ".[fsspec]" ${STORE_PACKAGES} \
    && rm -rf build ./*.egg-info

USER bulkops:bulkops

CMD ["celery", "-A", "worker", "worker", "-Q", "imports,updates,maintenance", "--loglevel=INFO"]
