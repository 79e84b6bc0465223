# Runs as root on an HA node (rollback of deploy.<node>): Patroni, etcd, the dbctl helpers and
# the TLS files go, the data disk is unmounted.
set -uo pipefail
MNT=/pgdata
systemctl disable --now patroni etcd >/dev/null 2>&1
rm -f /etc/patroni/config.yml /usr/local/sbin/dbctl-patroni /usr/local/lib/dbctl/on-role-change
rm -rf /etc/dbctl/tls /etc/systemd/system/patroni.service.d
systemctl daemon-reload
mountpoint -q "$MNT" && umount "$MNT"
sed -i "\# $MNT ext4 #d" /etc/fstab
exit 0
