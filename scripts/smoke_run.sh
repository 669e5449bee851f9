#!/usr/bin/env bash
# Runs the README's `make run` as a user would, checks both models answer
# on 127.0.0.1:8000, then stops it (Ctrl-C) and makes sure Ray is gone.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
set -m  # its own process group, so one signal reaches make and serve run
make run >"$log" 2>&1 &
pgid=$!
set +m

stop() {  # SIGTERM: a background job here ignores SIGINT (Ctrl-C)
  kill -TERM -- -"$pgid" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$pgid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- -"$pgid" 2>/dev/null
  .venv/bin/ray stop --force >/dev/null 2>&1 || true
}
trap stop EXIT

for _ in $(seq 180); do
  curl -sf http://127.0.0.1:8000/readyz >/dev/null && break
  kill -0 "$pgid" 2>/dev/null || { echo "make run exited:"; tail -40 "$log"; exit 1; }
  sleep 1
done
curl -sf http://127.0.0.1:8000/readyz || { echo "not ready after 180 s:"; tail -40 "$log"; exit 1; }
echo
# post MODEL CURL_ARGS...: the body on 200; otherwise the status, the body
# and the server log's tail, so a failure in CI says what happened.
post() {
  local model=$1 out status
  shift
  out=$(mktemp)
  status=$(curl -s -o "$out" -w '%{http_code}' -X POST "http://127.0.0.1:8000/v1/models/$model/predict" "$@")
  if [ "$status" != 200 ]; then
    echo "$model predict answered HTTP $status:"; cat "$out"; echo; tail -60 "$log"; exit 1
  fi
  cat "$out"
}
emb=$(post embedder -H 'Content-Type: application/json' -d '{"texts": ["hello"]}') || { echo "$emb"; exit 1; }
echo "${emb:0:80}"
text=$(post transcriber -H 'Content-Type: audio/ogg' --data-binary @tests/data/speech.ogg) || { echo "$text"; exit 1; }
echo "${text:0:200}"
# Whisper's words differ a little per CPU: the tests' one transcript rule (tests/transcripts.py).
echo "$text" | .venv/bin/python -m tests.transcripts speech.ogg --json || exit 1
echo "smoke: make run serves both models"
