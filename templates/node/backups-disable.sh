# Runs as root on a node (rollback of register.backups): stop the schedule and archiving;
# with PURGE=purge also delete the stanza and all its backups from the repository.
#   MODE single|leader|member as in backups-enable.sh (an HA cluster's archive_command is
#   removed through Patroni by dbctl; only MODE leader purges).
set -uo pipefail
STANZA="$1"; MAJOR="$2"; PURGE="$3"; MODE="${4:-single}"
systemctl disable --now dbctl-backup-full.timer dbctl-backup-diff.timer >/dev/null 2>&1
systemctl stop dbctl-backup-promoted.service >/dev/null 2>&1
rm -f /etc/systemd/system/dbctl-backup@.service /etc/systemd/system/dbctl-backup-*.timer \
  /etc/systemd/system/dbctl-backup-promoted.service /usr/local/lib/dbctl/is-leader \
  /usr/local/lib/dbctl/backup-promoted
systemctl daemon-reload
if [ "$MODE" = single ]; then
  rm -f "/etc/postgresql/$MAJOR/main/conf.d/archive.conf"
  sudo -u postgres psql -X -q -c 'SELECT pg_reload_conf()' >/dev/null 2>&1
fi
if [ "$PURGE" = purge ] && [ "$MODE" != member ] && [ -f /etc/pgbackrest/pgbackrest.conf ]; then
  sudo -u postgres pgbackrest "--stanza=$STANZA" stop || true
  sudo -u postgres pgbackrest "--stanza=$STANZA" --force stanza-delete || exit 1
  echo "stanza $STANZA deleted"
fi
exit 0
