#!/usr/bin/env bash
# Spark's Thrift JDBC/ODBC server (HiveServer2 protocol) on the deeplog catalog, bound to 127.0.0.1,
# for BI tools and beeline. It serves the tables that jobs registered with `--catalog_schema deeplog
# --metastore_dir DIR`, from the same embedded Derby metastore. It stops only what it started.
#
#   METASTORE_DIR=meta scripts/thriftserver.sh start    waits until the server accepts connections
#   METASTORE_DIR=meta scripts/thriftserver.sh beeline -e 'SELECT * FROM deeplog.verdicts LIMIT 5'
#   METASTORE_DIR=meta scripts/thriftserver.sh stop     stops the server by the PID it recorded
#
# Embedded Derby admits one JVM at a time: stop the server before the next job writes the tables.
# Environment: METASTORE_DIR (required; the jobs' metastore_dir), PORT (10000), STATE_DIR
# ($METASTORE_DIR/thriftserver: PID and log), PYTHON (the interpreter whose pyspark is used).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${METASTORE_DIR:?set METASTORE_DIR to the jobs metastore_dir}"
meta="$(cd "$METASTORE_DIR" 2>/dev/null && pwd || { mkdir -p "$METASTORE_DIR" && cd "$METASTORE_DIR" && pwd; })"
PORT="${PORT:-10000}"
STATE_DIR="${STATE_DIR:-$meta/thriftserver}"
PY="${PYTHON:-$here/.venv/bin/python}"
export SPARK_LOCAL_IP=127.0.0.1
export SPARK_HOME="${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
pidf="$STATE_DIR/thriftserver.pid"

running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }

case "${1:-}" in
  start)
    mkdir -p "$STATE_DIR"
    if running; then
      echo "error: a Thrift server started by this script is running (pid $(cat "$pidf")); stop it first" >&2
      exit 1
    fi
    # the catalog settings of deeplog_spark.core.session.metastore_conf, and Delta's, as the jobs use them
    mapfile -t confs < <(cd "$here" && "$PY" - "$meta" <<'PYEOF'
import importlib.metadata as md, pathlib, sys
from deeplog_spark.core.session import DELTA_CONF, delta_package, metastore_conf
# The server opens its SQL sessions with the JVM's own class loader, which does not see --packages
# jars: Delta's two jars (from the Ivy cache that --packages fills) also go on the driver class path.
pkg = delta_package()
artifact, version = pkg.split(":")[1:]
jars = [pathlib.Path.home() / ".ivy2.5.2" / "jars" / f"io.delta_{a}-{version}.jar" for a in (artifact, "delta-storage")]
missing = [str(j) for j in jars if not j.is_file()]
if missing:
    sys.exit(f"error: {missing[0]} is not in the Ivy cache yet: run any job first (it downloads the Delta jars)")
print("--packages"); print(pkg)
print("--driver-class-path"); print(":".join(map(str, jars)))
for k, v in {**DELTA_CONF, **metastore_conf(sys.argv[1])}.items():
    print("--conf"); print(f"{k}={v}")
PYEOF
)
    (cd "$STATE_DIR" && exec "$SPARK_HOME/bin/spark-submit" --master "local[2]" --driver-memory 1g \
      --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2 --name "deeplog Thrift JDBC server" \
      "${confs[@]}" --conf spark.ui.enabled=false \
      --conf "spark.driver.extraJavaOptions=-Dderby.stream.error.file=$STATE_DIR/derby.log" \
      spark-internal --hiveconf hive.server2.thrift.bind.host=127.0.0.1 --hiveconf "hive.server2.thrift.port=$PORT" \
      >"$STATE_DIR/thriftserver.log" 2>&1) &
    echo $! >"$pidf"
    for _ in $(seq 1800); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "jdbc:hive2://127.0.0.1:$PORT"; exit 0; fi
      if ! running; then echo "error: the Thrift server exited; see $STATE_DIR/thriftserver.log" >&2
        tail -20 "$STATE_DIR/thriftserver.log" >&2; rm -f "$pidf"; exit 1; fi
      sleep 0.1
    done
    echo "error: the Thrift server did not open port $PORT in 180 s; see $STATE_DIR/thriftserver.log" >&2
    exit 1
    ;;
  stop)
    if running; then
      pid="$(cat "$pidf")"
      kill "$pid"
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
    ;;
  beeline)
    shift
    exec "$SPARK_HOME/bin/beeline" -u "jdbc:hive2://127.0.0.1:$PORT" --silent=true --showHeader=true \
      --outputformat=csv2 "$@"
    ;;
  *)
    echo "usage: METASTORE_DIR=DIR $0 start|stop|beeline [beeline args]" >&2
    exit 2
    ;;
esac
