# Runs as root on every node (dbctl register.monitoring): configure and start the node and
# postgres exporters, then wait (with backoff) until the postgres exporter reports pg_up 1.
set -euo pipefail
cat > /etc/default/prometheus-postgres-exporter <<'CONF'
# Written by dbctl: the local socket, peer-authenticated as the pg_monitor role "prometheus".
DATA_SOURCE_NAME='host=/var/run/postgresql user=prometheus dbname=postgres sslmode=disable'
ARGS='--web.listen-address=:9187'
CONF
systemctl enable --now prometheus-node-exporter prometheus-postgres-exporter >/dev/null 2>&1
systemctl restart prometheus-postgres-exporter
d=0.2
for _ in $(seq 1 40); do
  # Read whole pages first: grep -q closing a pipe early would fail the pipeline (pipefail).
  pgm=$(busybox wget -q -O- http://127.0.0.1:9187/metrics 2>/dev/null || true)
  nodem=$(busybox wget -q -O- http://127.0.0.1:9100/metrics 2>/dev/null || true)
  if grep -q '^pg_up 1' <<<"$pgm" && grep -q '^node_boot_time_seconds' <<<"$nodem"; then
    echo ok; exit 0
  fi
  sleep $d; d=$(awk "BEGIN{print ($d*1.5>3)?3:$d*1.5}")
done
journalctl -u prometheus-postgres-exporter -n 10 --no-pager >&2
exit 1
