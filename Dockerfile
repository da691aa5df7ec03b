# One image for everything a DataJuicerJob runs: the operator (dj-operator), the driver
# (dj-process, with dj-monitor and dj-stop beside it) and the KubeRay head and worker pods.
# Ray and Python come from the official Ray image and must equal the project's pins
# (pyproject.toml: ray[data]==2.60.0, Python 3.11); tests/deploy/test_image.py checks both.
# BASE_IMAGE swaps in a stand-in with the same Python, Ray and user, e.g. the one CI builds
# from Debian and PyPI (docker/ray-base.Dockerfile, scripts/local-images.sh).
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311
FROM ${BASE_IMAGE}

# The base image's non-root user: ray, uid 1000, group users (100). The chart and the
# operator's pods set runAsUser 1000 to match. The directory is made by that user: the
# legacy builder would create a WORKDIR owned by root, and pip could not write in it.
USER 1000
RUN mkdir -p /home/ray/datajuicer-ft
WORKDIR /home/ray/datajuicer-ft

COPY --chown=1000:100 pyproject.toml README.md requirements-lock.txt ./
COPY --chown=1000:100 worker/ worker/
COPY --chown=1000:100 operator/djoperator/ operator/djoperator/

# The lock file pins Ray (already in the base) and the S3 stack; the smoke test proves
# every console script the pods run is installed and importable.
RUN pip install --no-cache-dir --constraint requirements-lock.txt ".[ray,operator]" \
 && dj-process --list-ops > /dev/null \
 && dj-monitor --help > /dev/null \
 && dj-stop --help > /dev/null \
 && dj-operator --help > /dev/null

ENV PYTHONUNBUFFERED=1

# The operator's entrypoint; the driver pods and KubeRay set their own command.
CMD ["dj-operator", "--all-namespaces"]
