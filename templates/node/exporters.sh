# Runs as root on every node (dbctl register.monitoring): configure and start the node and
# postgres exporters, then wait (with backoff) until the postgres exporter reports pg_up 1.
set -euo pipefail
cat > /etc/default/prometheus-postgres-exporter <<'CONF'
# Written by dbctl: the local socket, peer-authenticated as the pg_monitor role "prometheus".
DATA_SOURCE_NAME='host=/var/run/postgresql user=prometheus dbname=postgres sslmode=disable'
ARGS='--web.listen-address=:9187 --extend.query-path=/etc/prometheus-postgres-exporter/dbctl-queries.yaml'
CONF
# Debian 12's exporter (0.11) has no role metric, and the targets carry no role label (it would
# go stale on a failover): pg_replication_is_replica, as newer exporters name it, 0 on the leader.
mkdir -p /etc/prometheus-postgres-exporter
cat > /etc/prometheus-postgres-exporter/dbctl-queries.yaml <<'YAML'
pg_replication:
  query: "SELECT CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica"
  metrics:
    - is_replica:
        usage: "GAUGE"
        description: "1 on a standby, 0 on the primary"
YAML
systemctl enable --now prometheus-node-exporter prometheus-postgres-exporter >/dev/null 2>&1
systemctl restart prometheus-postgres-exporter
# One HTTP/1.0 GET through bash's /dev/tcp: stock cloud images need not have any HTTP client.
# A subshell, so a refused connection only ends it.
metrics() (
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  cat <&3
)
d=0.2
for _ in $(seq 1 40); do
  # Read whole pages first: grep -q closing a pipe early would fail the pipeline (pipefail).
  pgm=$(metrics 9187 2>/dev/null || true)
  nodem=$(metrics 9100 2>/dev/null || true)
  if grep -q '^pg_up 1' <<<"$pgm" && grep -q '^pg_replication_is_replica' <<<"$pgm" &&
    grep -q '^node_boot_time_seconds' <<<"$nodem"; then
    echo ok; exit 0
  fi
  sleep $d; d=$(awk "BEGIN{print ($d*1.5>3)?3:$d*1.5}")
done
journalctl -u prometheus-postgres-exporter -n 10 --no-pager >&2
exit 1
