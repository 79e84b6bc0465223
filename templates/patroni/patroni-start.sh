# Runs as root on an HA node (dbctl setup.patroni.<node>), after dbctl uploaded
# /etc/patroni/config.yml. Starts Patroni, which from then on owns PostgreSQL on this node:
# on the first leader it bootstraps the cluster (initdb --data-checksums) or adopts a restored
# data directory; elsewhere it clones the leader. Idempotent: a running Patroni is left alone.
set -euo pipefail
MAJOR="$1"; MNT=/pgdata; DATA="$MNT/$MAJOR/main"
mountpoint -q "$MNT" || mount "$MNT"
# Patroni starts PostgreSQL itself: the distribution's cluster unit must never run beside it.
systemctl disable --now "postgresql@$MAJOR-main" >/dev/null 2>&1 || true
# A data directory restored by dbctl (restore onto an HA instance) was adopted as a Debian
# cluster: hand it to Patroni, which writes its own postgresql.conf and pg_hba.conf.
if [ -f "/etc/postgresql/$MAJOR/main/postgresql.conf" ] && [ -f "$DATA/PG_VERSION" ]; then
  echo "adopting the restored data directory"
  rm -rf "/etc/postgresql/$MAJOR/main"
  rm -f "$DATA/postgresql.conf" "$DATA/postgresql.auto.conf"
fi
install -d -o postgres -g postgres -m 700 "$MNT/$MAJOR"
install -d -o postgres -g postgres -m 755 /var/run/postgresql
mkdir -p /etc/systemd/system/patroni.service.d
cat > /etc/systemd/system/patroni.service.d/dbctl.conf <<UNIT
[Unit]
Description=Patroni for dbctl's HA cluster (owns PostgreSQL $MAJOR on $DATA)
RequiresMountsFor=$MNT
After=etcd.service
[Service]
# Under software emulation a PostgreSQL checkpoint at stop can take a while.
TimeoutStopSec=300
Restart=always
RestartSec=2
UNIT
systemctl daemon-reload
systemctl enable patroni >/dev/null 2>&1
if systemctl is-active -q patroni; then
  # A re-run with a changed config: Patroni reloads it on SIGHUP.
  systemctl reload patroni
  echo "patroni running"
else
  systemctl start patroni
  echo "patroni started"
fi
