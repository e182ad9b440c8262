# bundler for CI pipelines: `docker build -t bundler .`, then
#   docker run --rm -v "$PWD:/work" -w /work bundler build --registries registries.yaml
# BASE is any image with Debian's or python.org's python3 (>= 3.10) and its venv module.
# PIP_ARGS are extra pip options, e.g. "--no-index --find-links /src/wheels" to build without
# network from wheels put into the build context (tests/test_dockerfile.py builds that way).
ARG BASE=python:3.12-slim
FROM ${BASE}
ARG PIP_ARGS=
COPY . /src
RUN python3 -m venv /opt/bundler \
    && /opt/bundler/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
       $PIP_ARGS /src \
    && rm -rf /src
ENV PATH=/opt/bundler/bin:$PATH
# The bundle files written into a mounted directory belong to the caller, not to root: pass
# --user "$(id -u):$(id -g)" to docker run.
ENTRYPOINT ["bundler"]
CMD ["--help"]
