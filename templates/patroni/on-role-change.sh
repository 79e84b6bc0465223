#!/bin/sh
# Patroni's on_role_change callback (installed by dbctl as /usr/local/lib/dbctl/on-role-change;
# runs as postgres with ACTION ROLE SCOPE). When this node becomes the leader, its backups
# start at once: dbctl-backup-promoted (installed by register.backups) creates the stanza in
# this node's repository if it has none, checks archiving and takes a full backup. Until the
# register stage installed that unit there is nothing to start.
ACTION="$1"; ROLE="$2"
logger -t dbctl "patroni: $ACTION, role $ROLE"
case "$ROLE" in
  master|primary)
    sudo -n /bin/systemctl start --no-block dbctl-backup-promoted.service 2>/dev/null || true ;;
esac
exit 0
