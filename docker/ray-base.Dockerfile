# The CI stand-in for rayproject/ray:2.60.0-py311, built by scripts/local-images.sh from a
# local Debian bookworm rootfs (no image registry is reachable): bookworm's Python 3.11 in a
# venv owned by the image's user, which is laid out like the official image's (ray, uid
# 1000, group users, home /home/ray), and ray==2.60.0 from PyPI.
#
# The project's declared dependencies are installed here too, under the lock, so that the
# project's Dockerfile, built FROM this image, needs no network: its pip install finds every
# requirement satisfied and builds the project with the setuptools installed here.
ARG DEBIAN_IMAGE=dj-local/debian:bookworm
FROM ${DEBIAN_IMAGE}

RUN useradd --create-home --uid 1000 --gid 100 --shell /bin/bash ray

USER 1000
WORKDIR /home/ray
ENV HOME=/home/ray \
    VIRTUAL_ENV=/home/ray/venv \
    PATH=/home/ray/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_BUILD_ISOLATION=0 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

COPY --chown=1000:100 pyproject.toml requirements-lock.txt /tmp/dj-deps/

# The host's CA bundle is mounted for this step only (a BuildKit secret): pip reaches PyPI
# through a proxy only that bundle trusts, and the image must not carry it.
RUN --mount=type=secret,id=ca_bundle,uid=1000 \
    python3 -m venv /home/ray/venv \
 && export PIP_CERT=/run/secrets/ca_bundle \
 && python3 -c 'import tomllib; t = tomllib.load(open("/tmp/dj-deps/pyproject.toml", "rb")); \
      p = t["project"]; extras = p["optional-dependencies"]; \
      print("\n".join(p["dependencies"] + extras["ray"] + extras["operator"] + t["build-system"]["requires"]))' \
      > /tmp/dj-deps/requirements.txt \
 && pip install --no-cache-dir --upgrade pip wheel \
 && pip install --no-cache-dir --constraint /tmp/dj-deps/requirements-lock.txt --requirement /tmp/dj-deps/requirements.txt \
 && rm -rf /tmp/dj-deps /home/ray/.cache \
 && python -c 'import ray; assert ray.__version__ == "2.60.0", ray.__version__'

CMD ["/bin/bash"]
