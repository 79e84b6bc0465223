# Runs as root on the node (dbctl deploy, step 2): enable and (re)start the cluster, wait ready.
set -euo pipefail
MAJOR="$1"
systemctl daemon-reload
systemctl enable "postgresql@$MAJOR-main" >/dev/null 2>&1
systemctl restart "postgresql@$MAJOR-main"
for _ in $(seq 1 240); do
  pg_isready -q -h /var/run/postgresql && exit 0
  sleep 0.25
done
journalctl -u "postgresql@$MAJOR-main" -n 20 --no-pager >&2
exit 1
