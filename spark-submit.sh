#!/usr/bin/env bash
# Run a deeplog-spark job with spark-submit, the way a cluster user would.
#
#   ./spark-submit.sh --task TASK [--model RUN_ID] [--config PATH] [--KEY VALUE ...]
#   ./spark-submit.sh --help                        tasks, options and every config key
#   ./spark-submit.sh <job> [...]                   another job of jobs/*.py (default job: run)
#
# Environment:
#   SPARK_MASTER          --master (default local[*]); e.g. spark://127.0.0.1:7077, local-cluster[2,1,1024]
#   SPARK_DRIVER_MEMORY   --driver-memory (default 4g)
#   DEEPLOG_SUBMIT_OPTS   extra spark-submit options, e.g. "--conf spark.executor.memory=4g"
#   DEEPLOG_CONFIG        config file (default conf/deeplog.toml of this checkout; --config wins)
#   PYTHON                interpreter with the requirements installed (default .venv/bin/python)
#
# The Delta jar (matching the installed delta-spark and pyspark) comes from Maven Central via
# --packages and is cached in the Ivy cache; the library ships to executors as a --py-files zip.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The task CLI (jobs/run.py) is the default job: `./spark-submit.sh --task key` runs it.
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  job=run
else
  job="$1"; shift
fi
script="$here/jobs/$job.py"
if ! [[ "$job" =~ ^[a-z_]+$ ]] || [ ! -f "$script" ]; then
  echo "error: unknown job '$job'; jobs: $(cd "$here/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
  exit 2
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$here/.venv/bin/python" ]; then PY="$here/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
bindir="$(dirname "$PY")"
if [ -x "$bindir/spark-submit" ]; then submit="$bindir/spark-submit"; else submit="$(command -v spark-submit)"; fi

# Ship the library as a zip (rebuilt each run so it always matches the working tree).
mkdir -p "$here/build"
"$PY" - "$here" <<'PYEOF'
import pathlib, sys, zipfile
root = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(root / "build" / "deeplog_spark.zip", "w", zipfile.ZIP_DEFLATED) as zf:
    for f in sorted((root / "deeplog_spark").rglob("*.py")):
        zf.write(f, f.relative_to(root))
PYEOF

delta_pkg="$(cd "$here" && "$PY" -c 'from deeplog_spark.core.session import delta_package; print(delta_package())')"
# the library runs from a zip under spark-submit, so point it at this checkout's config
export DEEPLOG_CONFIG="${DEEPLOG_CONFIG:-$here/conf/deeplog.toml}"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"

# Full logs (Python at DEBUG with tracebacks, Spark's own) go to $DEEPLOG_LOG_DIR (default ./logs).
export DEEPLOG_LOG_DIR="${DEEPLOG_LOG_DIR:-$PWD/logs}"
mkdir -p "$DEEPLOG_LOG_DIR"

# spark-submit merges the Python driver's stderr into its stdout; put the `error:` line back on
# stderr, where scripts look for it (every other line stays on stdout), and keep the exit code.
set -o pipefail
# shellcheck disable=SC2086
"$submit" \
  --master "${SPARK_MASTER:-local[*]}" \
  --driver-memory "${SPARK_DRIVER_MEMORY:-4g}" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$here/conf/log4j2.properties -Ddeeplog.log.dir=$DEEPLOG_LOG_DIR" \
  --packages "$delta_pkg" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --py-files "$here/build/deeplog_spark.zip" \
  ${DEEPLOG_SUBMIT_OPTS:-} \
  "$script" "$@" | while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      "error: "*) printf '%s\n' "$line" >&2 ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
