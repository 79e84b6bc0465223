# Runs as root on a replica (dbctl setup.clone): copy the primary with pg_basebackup over the
# private network (TLS verify-full, password from ~postgres/.pgpass, written by the caller
# before this script), then adopt the copy as this node's Debian cluster. Idempotent: a complete
# clone (PG_VERSION + standby.signal) is kept; a partial one is started over.
set -euo pipefail
MAJOR="$1"; PRIMARY="$2"; SLOT="$3"; MNT=/pgdata; DATA="$MNT/$MAJOR/main"
if [ -f "$DATA/PG_VERSION" ] && [ -f "$DATA/standby.signal" ]; then
  echo "already cloned"
else
  systemctl stop "postgresql@$MAJOR-main" 2>/dev/null || true
  rm -rf "$DATA"
  install -d -o postgres -g postgres -m 700 "$DATA"
  echo "pg_basebackup from $PRIMARY"
  sudo -u postgres pg_basebackup \
    -d "host=$PRIMARY port=5432 user=replicator sslmode=verify-full sslrootcert=/etc/dbctl/tls/ca.crt" \
    -D "$DATA" -X stream -S "$SLOT" -c fast
  sudo -u postgres touch "$DATA/standby.signal"
fi
if [ ! -f "/etc/postgresql/$MAJOR/main/postgresql.conf" ]; then
  # pg_createcluster adopts an existing data directory by moving its config files to /etc; the
  # primary keeps its config in /etc, so the copy has none: give it minimal ones.
  [ -f "$DATA/postgresql.conf" ] || printf "include_dir = 'conf.d'\n" | sudo -u postgres tee "$DATA/postgresql.conf" >/dev/null
  for f in pg_hba.conf pg_ident.conf; do [ -f "$DATA/$f" ] || sudo -u postgres touch "$DATA/$f"; done
  pg_createcluster "$MAJOR" main -d "$DATA" >/dev/null
fi
