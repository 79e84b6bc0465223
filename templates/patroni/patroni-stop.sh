# Runs as root on an HA node (rollback of setup.patroni.<node>): stop Patroni (and with it the
# PostgreSQL it runs) for good and remove the data directory it made.
set -uo pipefail
MAJOR="$1"; DATA="/pgdata/$MAJOR/main"
systemctl disable --now patroni >/dev/null 2>&1
# Patroni stops PostgreSQL on a clean stop; a crashed Patroni may have left it running.
if [ -f "$DATA/postmaster.pid" ]; then
  sudo -u postgres "/usr/lib/postgresql/$MAJOR/bin/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 || true
fi
rm -rf "$DATA" /etc/systemd/system/patroni.service.d
systemctl daemon-reload
exit 0
