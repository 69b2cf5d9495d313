#!/usr/bin/env bash
# Build the image where no registry can be reached: a Debian bookworm base made with
# debootstrap (python3 is 3.11 there), wheels built on the host from the lock, podman with
# chroot isolation. Then start it and get a decision. Prints one line per step.
#   deploy/build-image.sh            # build and smoke-test handshake:local
# Needs root (apt-get, debootstrap). Takes about 3 minutes on a fresh 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '== %s\n' "$*"; }

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing podman, debootstrap, runc"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null
fi
if [ ! -f /etc/containers/containers.conf ] || ! grep -q default_ulimits /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n' "$(ulimit -n)" "$(ulimit -n)" \
    >> /etc/containers/containers.conf
fi
if ! podman image exists localhost/debian-python:bookworm; then
  log "making the base image with debootstrap"
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$rootfs" -c . | podman import - localhost/debian-python:bookworm >/dev/null
  rm -rf "$rootfs"
fi
log "building wheels from requirements/runtime.lock"
python3 -m pip wheel --quiet -r requirements/runtime.lock "setuptools>=77" -w deploy/wheels
log "building the image"
# The base by digest, as the Dockerfile's default is: a moved tag cannot change what is built.
base=localhost/debian-python:bookworm@$(podman image inspect --format '{{.Digest}}' localhost/debian-python:bookworm)
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=$(git rev-parse HEAD 2>/dev/null || true)
created=$(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +%Y-%m-%dT%H:%M:%SZ)
origin=$(git remote get-url origin 2>/dev/null | sed -E 's#//[^/@]*@#//#' || true)  # no credentials
# --no-cache: buildah 1.28 reuses a cached LABEL step whose build arguments changed, so the
# labels would be an earlier build's (seen here).
podman build --quiet --no-cache --format docker --isolation chroot --pull=never --build-arg BASE_IMAGE="$base" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
  --build-arg SOURCE="$origin" -f deploy/Dockerfile -t handshake:local . >/dev/null
label() { podman image inspect --format "{{index .Labels \"org.opencontainers.image.$1\"}}" handshake:local; }
[ "$(label version)" = "$version" ] && [ "$(label revision)" = "$revision" ] && [ "$(label created)" = "$created" ] \
  && [ "$(label licenses)" = "Apache-2.0" ] || { echo "the image's OCI labels are not this build's"; exit 1; }
log "built from $base, labelled version $version, revision ${revision:-none}, created $created"
log "starting it"
name=handshake-smoke-$$
podman --runtime runc run -d --rm --name "$name" --network host --read-only --no-healthcheck \
  -e HANDSHAKE_PORT=18765 -e HANDSHAKE_HOST=127.0.0.1 handshake:local >/dev/null
trap 'podman --runtime runc stop -t 10 "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 60); do
  if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:18765/health/ready', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
log "asking for a decision"
answer=$(python3 - <<'PY'
import json, urllib.request
body = json.dumps({"request": json.load(open("examples/requests/old-colleague.json"))}).encode()
request = urllib.request.Request("http://127.0.0.1:18765/evaluate", data=body,
                                 headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(request, timeout=10))["rule"])
PY
)
[ "$answer" = "reconnect-first" ] || { echo "unexpected answer: $answer"; exit 1; }
log "the image answers: rule $answer"
user=$(podman --runtime runc exec "$name" id -u)
[ "$user" != "0" ] || { echo "the container runs as root"; exit 1; }
log "it runs as uid $user with a read-only root file system"
podman --runtime runc exec "$name" python3 -c \
  "import urllib.request as u; u.urlopen('http://127.0.0.1:18765/health/live', timeout=2)"
log "the image's health check command passes"
