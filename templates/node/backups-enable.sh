# Runs as root on a node (dbctl register.backups). Idempotent.
#   MODE single   the instance's only node: WAL archiving (conf.d + reload), stanza, check, first
#                 full backup (skipped when one exists), schedule.
#   MODE leader   an HA cluster's leader: archiving is set cluster-wide through Patroni by
#                 dbctl before this; stanza, check, first full backup, schedule.
#   MODE member   another HA member: the schedule only. Every node carries the same timers and
#                 each backup unit runs only on the node that leads at that moment; the unit
#                 dbctl-backup-promoted (started by Patroni's on_role_change callback) gives a
#                 new leader a stanza, a passing check and a backup at once (full in a
#                 repository without one, incremental in the shared S3 repository).
set -euo pipefail
STANZA="$1"; MAJOR="$2"; FULL="$3"; DIFF="$4"; REPO="$5"; MODE="${6:-single}"
P=(sudo -u postgres pgbackrest "--stanza=$STANZA")
if [ "$REPO" = node ]; then
  mountpoint -q /pgdata && install -d -o postgres -g postgres -m 750 /pgdata/backups
fi
install -d -o postgres -g postgres -m 750 /var/log/pgbackrest /var/spool/pgbackrest
install -d -m 755 /usr/local/lib/dbctl
# Backups run where the writes are: on whichever node is not in recovery.
cat > /usr/local/lib/dbctl/is-leader <<'SH'
#!/bin/sh
[ "$(psql -X -Atq -h /var/run/postgresql -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]
SH
# A new leader backs up at once: an incremental on the new timeline where its repository holds
# the cluster's backups (S3: one repository for all nodes), which pgBackRest turns into a full
# one where it holds none (a node's own repository it never used). A full backup at every
# promotion would, with retention_full, expire the backups that restore to before a failover.
cat > /usr/local/lib/dbctl/backup-promoted <<SH
#!/bin/bash
set -euo pipefail
for _ in \$(seq 1 60); do /usr/local/lib/dbctl/is-leader && break; sleep 5; done
pgbackrest --stanza=$STANZA stanza-create
pgbackrest --stanza=$STANZA check
pgbackrest --stanza=$STANZA --type=incr backup
SH
chmod 755 /usr/local/lib/dbctl/is-leader /usr/local/lib/dbctl/backup-promoted
if [ "$MODE" = single ]; then
  CONF="/etc/postgresql/$MAJOR/main/conf.d/archive.conf"
  printf "# Written by dbctl: WAL goes to pgBackRest stanza %s.\narchive_command = 'pgbackrest --stanza=%s archive-push %%p'\n" "$STANZA" "$STANZA" > "$CONF"
  chown postgres:postgres "$CONF"
  sudo -u postgres psql -X -q -c 'SELECT pg_reload_conf()' >/dev/null
fi
if [ "$MODE" != member ]; then
  # stanza-create writes archive.info, then backup.info; interrupted between the two it
  # refuses to run again ("backup.info is missing"). The stanza is this instance's alone and
  # has no backup yet, so delete the half-made one and create it anew.
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
fi
cat > /etc/systemd/system/dbctl-backup@.service <<UNIT
[Unit]
Description=pgBackRest %i backup of stanza $STANZA (dbctl; only on the leader)
[Service]
Type=oneshot
User=postgres
ExecCondition=/usr/local/lib/dbctl/is-leader
ExecStart=/usr/bin/pgbackrest --stanza=$STANZA --type=%i backup
UNIT
cat > /etc/systemd/system/dbctl-backup-promoted.service <<UNIT
[Unit]
Description=Stanza, check and backup of $STANZA after this node became the leader (dbctl)
[Service]
Type=oneshot
User=postgres
ExecStart=/usr/local/lib/dbctl/backup-promoted
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
if [ "$MODE" != member ]; then "${P[@]}" info --output=json; fi
