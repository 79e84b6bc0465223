# Runs as root on the node (dbctl deploy.packages.<node>). Makes sure the packages dbctl's
# later steps use are installed: PostgreSQL MAJOR (server + contrib), pgBackRest, the Prometheus
# node and postgres exporters. dbctl's own image carries them all, so there this is one check;
# a stock cloud image (imported local image, official Debian AMI) gets them from its own
# package sources on first boot.
# Installed like dbctl's image has them: no "main" cluster (dbctl creates its own on the data
# disk), no service started or enabled (later steps start what they configure).
# HA=ha also installs Patroni and etcd (an HA cluster's nodes run both), likewise not started.
# Exit 3: the package sources do not have PostgreSQL MAJOR (retrying will not help).
set -euo pipefail
MAJOR="$1"; HA="${2:-}"
# (Not busybox: its initramfs hook regenerates the initrd, minutes under emulation.)
PKGS="postgresql-$MAJOR pgbackrest prometheus-node-exporter prometheus-postgres-exporter"
[ "$HA" = ha ] && PKGS="$PKGS patroni python3-etcd etcd-server etcd-client"
have() {
  [ -x "/usr/lib/postgresql/$MAJOR/bin/postgres" ] && command -v pgbackrest >/dev/null \
    && [ -x /usr/bin/prometheus-node-exporter ] && [ -x /usr/bin/prometheus-postgres-exporter ] \
    && { [ "$HA" != ha ] || { [ -x /usr/bin/patroni ] && [ -x /usr/bin/etcd ] && [ -x /usr/bin/etcdctl ]; }; }
}
if have; then echo "packages present"; exit 0; fi

export DEBIAN_FRONTEND=noninteractive
# An earlier attempt may have been cut off mid-install.
dpkg --configure -a >/dev/null 2>&1 || true
# policy-rc.d 101: packages must not start their services while being installed.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt_install() {
  apt-get -q install -y --no-install-recommends -o Acquire::Retries=3 "$@" >>/tmp/dbctl-apt.log 2>&1 \
    || { tail -5 /tmp/dbctl-apt.log >&2; exit 1; }
}

echo "apt-get update"
apt-get -q update -o Acquire::Retries=3 >/tmp/dbctl-apt.log 2>&1 || { tail -5 /tmp/dbctl-apt.log >&2; exit 1; }
if ! apt-cache show "postgresql-$MAJOR" >/dev/null 2>&1; then
  echo "postgresql-$MAJOR is not in this image's package sources (choose another --version)" >&2
  exit 3
fi
# postgresql-common first, to turn off its "main" cluster before the server package would
# create one (an initdb for nothing). Its createcluster.conf stays the distribution's otherwise:
# it also carries the postgresql.conf defaults, such as include_dir = 'conf.d'.
apt_install postgresql-common
sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
# A default-location cluster left by an attempt cut off before that line: not dbctl's (its
# cluster lives on the data disk, created later by deploy).
if [ -d "/var/lib/postgresql/$MAJOR/main" ] && [ -f "/etc/postgresql/$MAJOR/main/postgresql.conf" ] \
   && grep -q "^data_directory = '/var/lib/postgresql/$MAJOR/main'" "/etc/postgresql/$MAJOR/main/postgresql.conf"; then
  pg_dropcluster --stop "$MAJOR" main
fi
echo "apt-get install $PKGS"
apt_install $PKGS
systemctl disable --now postgresql.service prometheus-node-exporter.service \
  prometheus-postgres-exporter.service >/dev/null 2>&1 || true
if [ "$HA" = ha ]; then
  systemctl disable --now etcd.service patroni.service >/dev/null 2>&1 || true
  rm -rf /var/lib/etcd/default
fi
apt-get clean
have || { echo "packages installed but $PKGS incomplete" >&2; exit 1; }
echo "installed $PKGS"
