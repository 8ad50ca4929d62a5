#!/usr/bin/env bash
# Started by `make run`: the simulator (when no OPENAI_API_KEY), a Celery worker with beat (syncs, and alerts
# from the `notifications` queue), a worker for the `files` queue (error-file scans, file metadata), one for the
# `archive` queue (copies of finished batches' files, their cleanup, the request index, re-pricing), and the web
# server, in the foreground. Ctrl-C stops every one of them.
set -euo pipefail
trap 'trap - INT TERM EXIT; kill 0 2>/dev/null; wait 2>/dev/null' INT TERM EXIT

if [ -z "${OPENAI_API_KEY:-}" ]; then
  "$BIN/python" -m simulator --port "$SIM_PORT" --batches 300 --active 12 --speed 20 \
    --arrival-interval 45 --api-key sk-sim &
fi
"$BIN/celery" -A dashboard worker -B -Q celery,notifications --loglevel INFO --concurrency 2 \
  --schedule var/celerybeat-schedule --hostname "batchboard@%h" &
"$BIN/celery" -A dashboard worker -Q files --loglevel INFO --concurrency 1 --hostname "files@%h" &
"$BIN/celery" -A dashboard worker -Q archive --loglevel INFO --concurrency 1 --hostname "archive@%h" &
"$BIN/python" manage.py runserver --noreload "$HOST:$PORT" &

sleep 2
echo
echo "  Batchboard is running at http://$HOST:$PORT/"
cat var/demo-login.txt 2>/dev/null || true
echo "  Press Ctrl-C to stop everything."
echo
wait -n
