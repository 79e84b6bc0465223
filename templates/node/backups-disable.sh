# Runs as root on the primary (rollback of register.backups): stop the schedule and archiving;
# with PURGE=purge also delete the stanza and all its backups from the repository.
set -uo pipefail
STANZA="$1"; MAJOR="$2"; PURGE="$3"
systemctl disable --now dbctl-backup-full.timer dbctl-backup-diff.timer >/dev/null 2>&1
rm -f /etc/systemd/system/dbctl-backup@.service /etc/systemd/system/dbctl-backup-*.timer
systemctl daemon-reload
rm -f "/etc/postgresql/$MAJOR/main/conf.d/archive.conf"
sudo -u postgres psql -X -q -c 'SELECT pg_reload_conf()' >/dev/null 2>&1
if [ "$PURGE" = purge ] && [ -f /etc/pgbackrest/pgbackrest.conf ]; then
  sudo -u postgres pgbackrest "--stanza=$STANZA" stop || true
  sudo -u postgres pgbackrest "--stanza=$STANZA" --force stanza-delete || exit 1
  echo "stanza $STANZA deleted"
fi
exit 0
