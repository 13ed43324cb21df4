#!/usr/bin/env bash
# A Spark standalone cluster on this machine (one master, one worker), bound to 127.0.0.1, started
# with the pyspark install's bin/spark-class. It stops only what it started.
#
#   scripts/standalone.sh start      master at spark://127.0.0.1:$PORT, then a worker; waits until registered
#   scripts/standalone.sh stop       stops the worker and the master (by the PIDs it recorded)
#   SPARK_MASTER=spark://127.0.0.1:7077 ./spark-submit.sh --task full-pipeline
#
# Environment: PORT (7077), WORKER_CORES (2), WORKER_MEMORY (2g), STATE_DIR (build/standalone:
# PIDs, logs and the worker's work dir), PYTHON (the interpreter whose pyspark is used).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PORT:-7077}"
STATE_DIR="${STATE_DIR:-$here/build/standalone}"
PY="${PYTHON:-$here/.venv/bin/python}"
export SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER_HOST=127.0.0.1
export SPARK_HOME="${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
class="$SPARK_HOME/bin/spark-class"

wait_for() {  # wait_for FILE PATTERN SECONDS PID
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    if ! kill -0 "$4" 2>/dev/null; then echo "error: process $4 exited; see $1" >&2; tail -20 "$1" >&2; return 1; fi
    sleep 0.1
  done
  echo "error: '$2' not seen in $1 after $3 s" >&2
  return 1
}

case "${1:-}" in
  start)
    mkdir -p "$STATE_DIR/work"
    for p in master worker; do
      if [ -f "$STATE_DIR/$p.pid" ] && kill -0 "$(cat "$STATE_DIR/$p.pid")" 2>/dev/null; then
        echo "error: a $p started by this script is running (pid $(cat "$STATE_DIR/$p.pid")); stop it first" >&2
        exit 1
      fi
    done
    "$class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$PORT" --webui-port 0 \
      >"$STATE_DIR/master.log" 2>&1 &
    echo $! >"$STATE_DIR/master.pid"
    wait_for "$STATE_DIR/master.log" "I have been elected leader" 60 "$(cat "$STATE_DIR/master.pid")"
    "$class" org.apache.spark.deploy.worker.Worker "spark://127.0.0.1:$PORT" --host 127.0.0.1 --webui-port 0 \
      --cores "${WORKER_CORES:-2}" --memory "${WORKER_MEMORY:-2g}" --work-dir "$STATE_DIR/work" \
      >"$STATE_DIR/worker.log" 2>&1 &
    echo $! >"$STATE_DIR/worker.pid"
    wait_for "$STATE_DIR/worker.log" "Successfully registered with master" 60 "$(cat "$STATE_DIR/worker.pid")"
    echo "spark://127.0.0.1:$PORT"
    ;;
  stop)
    for p in worker master; do
      f="$STATE_DIR/$p.pid"
      if [ -f "$f" ]; then
        pid="$(cat "$f")"
        if kill -0 "$pid" 2>/dev/null; then
          kill "$pid"
          for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
          kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
      fi
    done
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
