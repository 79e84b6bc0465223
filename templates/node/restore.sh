# Runs as root on a restored primary (dbctl deploy with `restore`): pgBackRest restores another
# instance's backup (to a point in time when TARGET is given, then promotes), and the result is
# adopted as this node's Debian cluster. Idempotent: a finished restore (cluster adopted) is
# kept; anything partial is started over.
set -euo pipefail
MAJOR="$1"; STANZA="$2"; CONF="$3"; TARGET="${4:-}"; MNT=/pgdata; DATA="$MNT/$MAJOR/main"
if [ -f "$DATA/PG_VERSION" ] && [ -f "/etc/postgresql/$MAJOR/main/postgresql.conf" ]; then
  echo "already restored"; exit 0
fi
systemctl stop "postgresql@$MAJOR-main" 2>/dev/null || true
rm -rf "$DATA"
install -d -o postgres -g postgres -m 700 "$DATA"
install -d -o postgres -g postgres -m 750 /var/log/pgbackrest /var/spool/pgbackrest
ARGS=("--config=$CONF" "--stanza=$STANZA" "--pg1-path=$DATA")
if [ -n "$TARGET" ]; then
  ARGS+=(--type=time "--target=$TARGET" --target-action=promote)
fi
echo "pgbackrest restore of stanza $STANZA${TARGET:+ to $TARGET}"
sudo -u postgres pgbackrest "${ARGS[@]}" restore
# The adopted cluster gets minimal config files; dbctl installs the real config next. A backup
# of a single node holds none (they live in /etc); one of an HA member holds Patroni's, which
# name Patroni's files and settings: replaced, so this node is configured like any other.
# (Recovery settings are in postgresql.auto.conf, untouched.)
rm -f "$DATA/postgresql.base.conf" "$DATA/patroni.dynamic.json"
printf "include_dir = 'conf.d'\n" | sudo -u postgres tee "$DATA/postgresql.conf" >/dev/null
for f in pg_hba.conf pg_ident.conf; do [ -f "$DATA/$f" ] || sudo -u postgres touch "$DATA/$f"; done
pg_createcluster "$MAJOR" main -d "$DATA" >/dev/null
