# Runs as root on the node (dbctl deploy, step 1). Idempotent: formats the data disk only if it
# holds no filesystem, mounts it by UUID, and on a primary creates the cluster on it unless it
# exists (a replica's cluster is cloned from the primary later).
set -euo pipefail
MAJOR="$1"; DEV="$2"; ROLE="${3:-primary}"; MNT=/pgdata; DATA="$MNT/$MAJOR/main"
for _ in $(seq 1 150); do [ -b "$DEV" ] && break; sleep 0.2; done
[ -b "$DEV" ] || { echo "data disk $DEV is not present" >&2; exit 3; }
if ! blkid -p "$DEV" >/dev/null 2>&1; then
  echo "formatting $DEV"
  mkfs.ext4 -q -L pgdata "$DEV"
fi
UUID=$(blkid -s UUID -o value "$DEV")
mkdir -p "$MNT"
grep -q "^UUID=$UUID " /etc/fstab || echo "UUID=$UUID $MNT ext4 noatime,nofail 0 2" >> /etc/fstab
mountpoint -q "$MNT" || mount "$MNT"
install -d -o postgres -g postgres -m 700 "$MNT/$MAJOR"
install -d -o postgres -g postgres -m 700 /etc/dbctl/tls
# Start PostgreSQL only once the data disk is mounted, on every boot.
mkdir -p "/etc/systemd/system/postgresql@$MAJOR-main.service.d"
printf '[Unit]\nRequiresMountsFor=%s\n' "$MNT" > "/etc/systemd/system/postgresql@$MAJOR-main.service.d/dbctl.conf"
if [ "$ROLE" = replica ]; then exit 0; fi
# A cluster whose initdb was interrupted has config but no PG_VERSION: start it over.
if [ -f "/etc/postgresql/$MAJOR/main/postgresql.conf" ] && [ ! -f "$DATA/PG_VERSION" ]; then
  pg_dropcluster "$MAJOR" main 2>/dev/null || rm -rf "/etc/postgresql/$MAJOR/main"
fi
if [ ! -f "/etc/postgresql/$MAJOR/main/postgresql.conf" ]; then
  rm -rf "$DATA"
  echo "initdb --data-checksums on $DATA"
  pg_createcluster "$MAJOR" main -d "$DATA" -- --data-checksums --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi
