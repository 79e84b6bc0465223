# Runs as root on an HA node (dbctl setup.etcd.<node>), after dbctl uploaded /etc/default/etcd
# (this member's name, its peers, TLS). etcd gets its own copy of the node's key (it runs as
# user etcd). Started without waiting: a new member blocks until a quorum of its peers is up,
# and the peers start in parallel; setup.patroni waits for the whole cluster's health.
# Idempotent: a member with data keeps it (etcd ignores the initial-cluster flags then).
set -euo pipefail
install -d -o etcd -g etcd -m 700 /etc/dbctl/etcd /var/lib/etcd/dbctl
install -o etcd -g etcd -m 600 /etc/dbctl/tls/server.key /etc/dbctl/etcd/server.key
install -o etcd -g etcd -m 644 /etc/dbctl/tls/server.crt /etc/dbctl/etcd/server.crt
install -o etcd -g etcd -m 644 /etc/dbctl/tls/ca.crt /etc/dbctl/etcd/ca.crt
# The package's unit, with dbctl's settings; restarted when they change, never killed.
mkdir -p /etc/systemd/system/etcd.service.d
cat > /etc/systemd/system/etcd.service.d/dbctl.conf <<'UNIT'
[Unit]
Description=etcd member of a dbctl HA cluster (Patroni's DCS)
[Service]
Restart=always
RestartSec=2
TimeoutStartSec=infinity
UNIT
systemctl daemon-reload
systemctl enable etcd >/dev/null 2>&1
if systemctl is-active -q etcd; then
  echo "etcd running"
else
  systemctl start --no-block etcd
  echo "etcd starting"
fi
