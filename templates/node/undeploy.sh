# Runs as root on the node (dbctl rollback of deploy): stop and remove the cluster, unmount.
set -uo pipefail
MAJOR="$1"; MNT=/pgdata
systemctl disable --now "postgresql@$MAJOR-main" >/dev/null 2>&1
pg_dropcluster "$MAJOR" main >/dev/null 2>&1 || rm -rf "/etc/postgresql/$MAJOR/main"
rm -rf "/etc/systemd/system/postgresql@$MAJOR-main.service.d" /etc/dbctl/tls
mountpoint -q "$MNT" && umount "$MNT"
sed -i "\# $MNT ext4 #d" /etc/fstab
exit 0
