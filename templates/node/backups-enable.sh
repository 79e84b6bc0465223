# Runs as root on the primary (dbctl register.backups): WAL archiving to pgBackRest, stanza,
# check, first full backup (skipped when one exists), systemd timers. Idempotent.
set -euo pipefail
STANZA="$1"; MAJOR="$2"; FULL="$3"; DIFF="$4"; REPO="$5"
P=(sudo -u postgres pgbackrest "--stanza=$STANZA")
if [ "$REPO" = node ]; then install -d -o postgres -g postgres -m 750 /pgdata/backups; fi
install -d -o postgres -g postgres -m 750 /var/log/pgbackrest /var/spool/pgbackrest
CONF="/etc/postgresql/$MAJOR/main/conf.d/archive.conf"
printf "# Written by dbctl: WAL goes to pgBackRest stanza %s.\narchive_command = 'pgbackrest --stanza=%s archive-push %%p'\n" "$STANZA" "$STANZA" > "$CONF"
chown postgres:postgres "$CONF"
sudo -u postgres psql -X -q -c 'SELECT pg_reload_conf()' >/dev/null
# stanza-create writes archive.info, then backup.info; interrupted between the two it refuses
# to run again ("backup.info is missing"). The stanza is this instance's alone and has no backup
# yet, so delete the half-made one and create it anew.
if ! OUT=$("${P[@]}" stanza-create 2>&1); then
  if grep -q "info is missing" <<<"$OUT" && ! "${P[@]}" info --output=json | grep -q '"label"'; then
    echo "removing a half-created stanza"
    "${P[@]}" stop
    "${P[@]}" --force stanza-delete
    "${P[@]}" start
    "${P[@]}" stanza-create
  else
    echo "$OUT" >&2; exit 1
  fi
fi
"${P[@]}" check
if ! "${P[@]}" info --output=json | grep -q '"type":"full"'; then
  echo "first full backup"
  "${P[@]}" --type=full backup
fi
cat > /etc/systemd/system/dbctl-backup@.service <<UNIT
[Unit]
Description=pgBackRest %i backup of stanza $STANZA (dbctl)
After=postgresql@$MAJOR-main.service
[Service]
Type=oneshot
User=postgres
ExecStart=/usr/bin/pgbackrest --stanza=$STANZA --type=%i backup
UNIT
for kind in full diff; do
  if [ $kind = full ]; then CAL="$FULL"; else CAL="$DIFF"; fi
  cat > /etc/systemd/system/dbctl-backup-$kind.timer <<UNIT
[Unit]
Description=$kind pgBackRest backups (dbctl)
[Timer]
OnCalendar=$CAL
Persistent=true
RandomizedDelaySec=300
Unit=dbctl-backup@$kind.service
[Install]
WantedBy=timers.target
UNIT
done
systemctl daemon-reload
systemctl enable --now dbctl-backup-full.timer dbctl-backup-diff.timer >/dev/null 2>&1
"${P[@]}" info --output=json
