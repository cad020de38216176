#!/usr/bin/env bash
# Compose test of deploy/: builds the image offline (deploy/build-images-offline.sh, no pulls),
# then with deploy/docker-compose.yml:
#   1. `up`: the submit service runs a 3-round job to completion; checked through the operator
#      API from this host on the published port (job succeeded 3/3, every worker contributed, each
#      worker trained its own partition, the coordinator's gRPC health check is healthy);
#   2. a fresh `up`: one worker process is killed mid-round; the job still completes (the round
#      closes with the quorum of 2), and the restart policy brings the worker back to join again;
#   3. with durable coordinator state (`fedcsg-coordinator --state-dir`, FEDCSG_STATE_DIR in the
#      compose file): the coordinator's process is killed mid-job, the restart policy brings it
#      back, and the job resumes from its last committed round. Skipped, saying so, while the
#      coordinator has no --state-dir;
# and tears everything down, volumes included. Prints SKIP and exits 0 when no Docker engine
# answers.
#
#   scripts/compose-test.sh [--profile debug|release] [--build]
#
# Uses the binaries in target/PROFILE (CI builds them just before, in scripts/test.sh); --build, or
# missing binaries, runs cargo build first.
#
# Env: COMPOSE_TEST_MAX_SAMPLES (200), COMPOSE_TEST_TEST_LIMIT (300), COMPOSE_TEST_TIMEOUT (900 s
# per job), COMPOSE_TEST_KEEP=1 leaves the last project running for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --build) build=1; shift ;;
    *) echo "usage: $0 [--profile debug|release] [--build]" >&2; exit 2 ;;
  esac
done

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "SKIP: no Docker engine (docker info does not answer): compose test not run"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  echo "SKIP: a Docker engine answers but neither 'docker compose' nor docker-compose is installed"
  exit 0
fi

rounds=3
max_samples="${COMPOSE_TEST_MAX_SAMPLES:-200}"
test_limit="${COMPOSE_TEST_TEST_LIMIT:-300}"
job_timeout="${COMPOSE_TEST_TIMEOUT:-900}"
target="${CARGO_TARGET_DIR:-target}"
image="fedcsg:compose-test"

echo "== the image, offline, from the $profile binaries"
for b in fedcsg fedcsg-coordinator fedcsg-worker fedcsg-health; do [ -x "$target/$profile/$b" ] || build=1; done
build_flag=()
[ "$build" = 1 ] && build_flag=(--build)
deploy/build-images-offline.sh --profile "$profile" --tag "$image" "${build_flag[@]}"
fedcsg_cli="$target/$profile/fedcsg"

work="$(mktemp -d)"
project="fedcsg-ci-$$"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
http_port="$(free_port)"
token() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
admin_token="$(token)"
cat >"$work/env" <<ENV
FEDCSG_IMAGE=$image
FEDCSG_ENROLLMENT_TOKEN=$(token)
FEDCSG_ADMIN_TOKEN=$admin_token
FEDCSG_PUBLISH=127.0.0.1
FEDCSG_PORT=$port
FEDCSG_HTTP_PORT=$http_port
FEDCSG_TEST_LIMIT=$test_limit
FEDCSG_HEARTBEAT_TIMEOUT_SECS=6
FEDCSG_ROUNDS=$rounds
FEDCSG_MAX_SAMPLES=$max_samples
FEDCSG_MIN_WORKERS=2
FEDCSG_ROUND_DEADLINE_SECS=300
ENV
compose() { "${compose_cmd[@]}" -p "$project" --env-file "$work/env" -f deploy/docker-compose.yml "$@"; }

teardown() {
  if [ "$1" != 0 ]; then
    echo "== logs of the failed run (tails)"
    compose logs --no-color --tail 40 2>&1 || true
  fi
  if [ "${COMPOSE_TEST_KEEP:-}" = 1 ]; then
    echo "== COMPOSE_TEST_KEEP=1: project $project left running (env file $work/env)"
    return
  fi
  compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap 'teardown $?' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { echo "  ok: $*"; }

cid() { compose ps -q "$1" 2>/dev/null | awk 'NR == 1'; }
# A service's log, captured whole (grep -q on a pipe would cut it short: SIGPIPE under pipefail).
logs_of() { compose logs --no-color "$1" 2>&1; }
log_has() { local text; text="$(logs_of "$1")"; grep -Eq -- "$2" <<<"$text"; }
ops() { "$fedcsg_cli" status --coordinator "http://127.0.0.1:$port" --admin-token "$admin_token" 2>/dev/null; }
# "STATE DONE/TOTAL MESSAGE..." of the job named job-1 (the only job of a fresh project).
job_line() { ops | awk '$1 == "job-1" && !seen { seen = 1; $1 = ""; sub(/^ /, ""); print }'; }

# Waits for the submit service to exit; prints its exit code.
wait_submit() {
  local id="" deadline=$((SECONDS + job_timeout))
  while [ -z "$id" ]; do
    id="$(cid submit)"
    [ $SECONDS -lt $deadline ] || fail "the submit service never started"
    [ -n "$id" ] || sleep 1
  done
  while [ "$(docker inspect -f '{{.State.Status}}' "$id")" != exited ]; do
    [ $SECONDS -lt $deadline ] || fail "the job did not finish within ${job_timeout} s"
    sleep 2
  done
  docker inspect -f '{{.State.ExitCode}}' "$id"
}

# Waits until the job trains round $1 (status message "round N training ..."), at least $2 s in.
wait_training_round() {
  local round="$1" deadline=$((SECONDS + job_timeout))
  until [[ "$(job_line)" == *"round $round training"* ]]; do
    [ $SECONDS -lt $deadline ] || fail "round $round never started training"
    sleep 1
  done
}

check_job_succeeded() {
  local line
  line="$(job_line)"
  echo "  operator API: job-1 $line"
  case "$line" in
    "succeeded $rounds/$rounds "*) check "job-1 succeeded with $rounds/$rounds rounds (fedcsg status on the published port)" ;;
    *) fail "job-1 is not succeeded $rounds/$rounds: '$line'" ;;
  esac
}

up() {
  local started=$SECONDS
  compose up -d >/dev/null 2>"$work/up.log" || { cat "$work/up.log" >&2; fail "compose up"; }
  echo "  compose up -d returned after $((SECONDS - started)) s"
}

# ---------------------------------------------------------------------------------------------
echo "== run 1: compose up, a $rounds-round job to completion (project $project, port $port)"
started=$SECONDS
up
code="$(wait_submit)"
elapsed=$((SECONDS - started))
echo "  submit service output:"
logs_of submit | sed 's/^/    /'
[ "$code" = 0 ] || fail "the submit service exited $code"
check "the submit service exited 0 (the job succeeded)"
echo "  TIME: compose up -> finished $rounds-round job: ${elapsed} s"
check_job_succeeded
health="$(docker inspect -f '{{.State.Health.Status}}' "$(cid coordinator)")"
[ "$health" = healthy ] || fail "coordinator health is '$health'"
check "coordinator healthy through its gRPC health check (fedcsg-health)"
workers="$(ops | awk '$2 ~ /^worker-[0-9]+$/ && $NF >= 1 { print $2 }' | sort -u | tr '\n' ' ')"
[ "$workers" = "worker-0 worker-1 worker-2 " ] || fail "not every worker contributed a round: '$workers'"
check "workers that contributed rounds: $workers"
for i in 0 1 2; do
  log_has "worker-$i" "partition $i/3 " || fail "worker-$i did not train partition $i/3"
done
check "worker-i trained partition i/3 (i = 0, 1, 2)"
# The published HTTP port: Prometheus metrics agree with the job, the dashboard needs the token.
metrics="$(curl -fsS "http://127.0.0.1:$http_port/metrics")" || fail "no /metrics on the published port $http_port"
grep -qx "fedcsg_rounds_committed_total $rounds" <<<"$metrics" || fail "/metrics does not count $rounds committed rounds"
check "/metrics on the published port counts $rounds committed rounds"
status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/api/overview")"
[ "$status" = 401 ] || fail "the dashboard API answered $status without the admin token"
curl -fsS -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$http_port/api/overview" | grep -q '"state":"succeeded"' \
  || fail "the dashboard API does not show the succeeded job"
check "the dashboard API needs the admin token (401 without) and shows the succeeded job with it"
compose down --volumes --timeout 10 >/dev/null 2>&1

# ---------------------------------------------------------------------------------------------
echo "== run 2: a worker process killed mid-round; the job still completes"
started=$SECONDS
up
wait_training_round 2
# Kill it while it still holds its round-2 task: before it has uploaded, so the round must close
# without it (a fixed sleep raced with fast rounds).
deadline=$((SECONDS + 60))
until [ "$(ops | awk '$2 == "worker-1" { print $4 }')" = training ]; do
  [ $SECONDS -lt $deadline ] || fail "worker-1 never held a training task in round 2"
  sleep 0.2
done
victim="$(cid worker-1)"
pid="$(docker inspect -f '{{.State.Pid}}' "$victim")"
if kill -9 "$pid" 2>/dev/null; then
  how="SIGKILL to its process (pid $pid on this host), a crash"
else
  docker kill "$victim" >/dev/null
  how="docker kill (this host cannot signal the container's process)"
fi
echo "  killed worker-1 during round 2: $how; job was: $(job_line)"
code="$(wait_submit)"
echo "  submit service output:"
logs_of submit | sed 's/^/    /'
[ "$code" = 0 ] || fail "the submit service exited $code after the worker kill"
check "the job completed after the kill (submit exited 0) in $((SECONDS - started)) s"
check_job_succeeded
log_has submit "round +[0-9]+: .* 2/3 workers" \
  || fail "no round closed with 2 of 3 workers: the kill did not hit a round"
check "a round closed with the quorum, 2 of 3 workers"
log_has coordinator "round closing with the quorum" || fail "no round closed with the quorum"
check "the coordinator closed the round with the quorum, before its deadline"
restarts="$(docker inspect -f '{{.RestartCount}}' "$victim")"
if [ "$how" != "${how#SIGKILL}" ]; then
  [ "$restarts" -ge 1 ] || fail "the restart policy did not restart worker-1 (RestartCount $restarts)"
  joins="$(logs_of coordinator | grep -c "worker joined .*name=worker-1" || true)"
  [ "$joins" -ge 2 ] || fail "worker-1 did not join again after its restart"
  check "the restart policy restarted worker-1 ($restarts restart(s)) and it joined again"
fi
compose down --volumes --timeout 10 >/dev/null 2>&1

# ---------------------------------------------------------------------------------------------
echo "== run 3: the coordinator restarted mid-job resumes from its last committed round"
coordinator_help="$(docker run --rm "$image" fedcsg-coordinator --help)"
if [[ "$coordinator_help" != *--state-dir* ]]; then
  echo "SKIP: coordinator restart/resume check not run: durable coordinator state is not built yet (fedcsg-coordinator --help lists no --state-dir)"
else
  started=$SECONDS
  up
  wait_training_round 2
  sleep 3
  before="$(job_line)"
  committed="$(echo "$before" | awk '{ split($2, r, "/"); print r[1] }')"
  coordinator="$(cid coordinator)"
  kill -9 "$(docker inspect -f '{{.State.Pid}}' "$coordinator")" 2>/dev/null || docker restart -t 0 "$coordinator" >/dev/null
  echo "  killed the coordinator's process during round 2 (job was: $before)"
  deadline=$((SECONDS + 120))
  sleep 2
  until ops >/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "the coordinator did not come back within 120 s"
    sleep 1
  done
  after="$(job_line)"
  [ -n "$after" ] || fail "the coordinator came back without job-1: its state was not kept"
  echo "  back after $((SECONDS - deadline + 120)) s (restarts: $(docker inspect -f '{{.RestartCount}}' "$coordinator")): job-1 $after"
  resumed="$(echo "$after" | awk '{ split($2, r, "/"); print r[1] }')"
  [ "$resumed" -ge "$committed" ] || fail "job-1 came back with $resumed committed round(s), behind the $committed it had"
  check "job-1 came back with $resumed committed round(s) (it had $committed before the kill), not from round 0"
  code="$(wait_submit)"
  logs_of submit | sed 's/^/    /'
  [ "$code" = 0 ] || fail "the submit service exited $code across the coordinator restart"
  check "the job completed across the coordinator restart in $((SECONDS - started)) s"
  check_job_succeeded
fi

echo "== teardown"
compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
left="$(docker ps -aq --filter "label=com.docker.compose.project=$project")$(docker volume ls -q --filter "label=com.docker.compose.project=$project")"
[ -z "$left" ] || fail "containers or volumes of $project are left: $left"
check "no container or volume of $project is left"

echo "PASS: compose test (image $image, $profile binaries; run 1: up -> finished $rounds-round job in ${elapsed} s)"
