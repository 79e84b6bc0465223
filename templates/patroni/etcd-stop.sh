# Runs as root on an HA node (rollback of setup.etcd.<node>): stop this etcd member for good
# and remove its data, so the cluster it belonged to is gone with the instance.
set -uo pipefail
systemctl disable --now etcd >/dev/null 2>&1
rm -rf /var/lib/etcd/dbctl /etc/dbctl/etcd /etc/systemd/system/etcd.service.d
rm -f /etc/default/etcd
systemctl daemon-reload
exit 0
