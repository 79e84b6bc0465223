#!/bin/bash
# Builds dbctl's base VM image: Debian 12 (debootstrap), kernel, systemd, OpenSSH, cloud-init
# (NoCloud), sudo, PostgreSQL 15 server binaries, pgBackRest, Prometheus node/postgres exporters,
# Patroni and etcd (HA clusters). Run by `dbctl image build` as root with:
#   WORK  scratch directory (root fs, debootstrap cache)   OUT  directory for the image files
#   FILES directory holding 99-dbctl.cfg and init           MIRROR  Debian mirror URI
# Produces OUT/{base.qcow2,vmlinuz,initrd.img,image.env}. Every line it prints is progress.
set -euo pipefail
: "${WORK:?}" "${OUT:?}" "${FILES:?}" "${MIRROR:?}"
ROOT=$WORK/root
PKGS=linux-image-cloud-amd64,systemd-sysv,udev,iproute2,openssh-server,cloud-init,python3-cffi-backend,postgresql-15,postgresql-contrib,sudo,busybox-static,e2fsprogs,util-linux,ca-certificates,pgbackrest,prometheus-node-exporter,prometheus-postgres-exporter,patroni,python3-etcd,etcd-server,etcd-client

echo "debootstrap bookworm from $MIRROR (a few minutes)"
rm -rf "$ROOT"
mkdir -p "$WORK/cache"
debootstrap --variant=minbase --cache-dir="$WORK/cache" --include=$PKGS bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log"; exit 1; }

ch() { chroot "$ROOT" /bin/sh -c "$*"; }

echo "configuring the system"
echo localhost > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
# The root fs is the whole virtio disk; pass 0 skips fsck at boot.
echo '/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0' > "$ROOT/etc/fstab"
echo 'LANG=C.UTF-8' > "$ROOT/etc/default/locale"
# Empty machine-id: each clone gets a fresh one.
: > "$ROOT/etc/machine-id"; rm -f "$ROOT/var/lib/dbus/machine-id"
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' > "$ROOT/etc/systemd/journald.conf.d/volatile.conf"

# SSH: ed25519 only, no host keys baked into the image (cloud-init makes one per VM).
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat > "$ROOT/etc/ssh/sshd_config.d/10-dbctl.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
GSSAPIAuthentication no
CONF

# Networking: systemd-networkd; addresses come from the kernel command line (ip=).
ch "systemctl enable systemd-networkd.service"
mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
  > "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"

# PostgreSQL: binaries only; dbctl creates its cluster on the data disk.
ch "pg_dropcluster 15 main" || true
sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' "$ROOT/etc/postgresql-common/createcluster.conf"
ch "systemctl disable postgresql.service"
# Backups and exporters are configured by dbctl's register stage, which also starts them.
ch "systemctl disable prometheus-node-exporter.service prometheus-postgres-exporter.service"
# HA only: dbctl configures etcd and Patroni on the nodes of an HA cluster and enables them
# there. The package's default single-member etcd data must not exist on any node.
ch "systemctl disable etcd.service patroni.service" || true
rm -rf "$ROOT/var/lib/etcd/default"

# Boot time: mask units a database VM does not need.
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
         e2scrub_reap.service fstrim.timer getty@tty1.service getty-static.service cloud-init-hotplugd.socket \
         systemd-journal-flush.service logrotate.timer man-db.timer \
         systemd-binfmt.service proc-sys-fs-binfmt_misc.automount dev-hugepages.mount dev-mqueue.mount \
         sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
         modprobe@configfs.service modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@fuse.service \
         modprobe@loop.service kmod-static-nodes.service systemd-update-utmp.service \
         systemd-update-utmp-runlevel.service systemd-pstore.service; do
  ch "systemctl mask $u" >/dev/null 2>&1 || true
done
mkdir -p "$ROOT/etc/systemd/system-generators"
for g in systemd-gpt-auto-generator systemd-cryptsetup-generator systemd-integritysetup-generator \
         systemd-veritysetup-generator systemd-hibernate-resume-generator systemd-system-update-generator \
         systemd-sysv-generator systemd-rc-local-generator; do
  ln -sf /dev/null "$ROOT/etc/systemd/system-generators/$g"
done

cp "$FILES/99-dbctl.cfg" "$ROOT/etc/cloud/cloud.cfg.d/99-dbctl.cfg"
ch "cloud-init clean --logs" || true
ch "apt-get clean"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*

echo "kernel and initramfs"
mkdir -p "$OUT"
KVER=$(ls "$ROOT/lib/modules" | head -1)
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
# A tiny busybox initramfs with only the virtio modules: systemd starts seconds earlier under TCG.
T=$(mktemp -d)
mkdir -p "$T/bin" "$T/lib/modules"
cp "$ROOT/bin/busybox" "$T/bin/busybox"
: > "$T/modules.list"
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  f=$(find "$ROOT/lib/modules/$KVER" -name "$m.ko*" | head -1)
  [ -n "$f" ] || continue
  case $f in *.xz) xz -dc "$f" > "$T/lib/modules/$m.ko";; *.zst) zstd -qdc "$f" > "$T/lib/modules/$m.ko";; *) cp "$f" "$T/lib/modules/$m.ko";; esac
  echo "$m" >> "$T/modules.list"
done
install -m 0755 "$FILES/init" "$T/init"
(cd "$T" && find . | cpio -o -H newc --quiet) > "$OUT/initrd.img"
rm -rf "$T"

echo "disk image"
rm -f "$WORK/base.raw"
mkfs.ext4 -q -F -L rootfs -d "$ROOT" "$WORK/base.raw" 4G
qemu-img convert -f raw -O qcow2 "$WORK/base.raw" "$OUT/base.qcow2"
rm -f "$WORK/base.raw"
PGMAJORS=$(ls "$ROOT/usr/lib/postgresql" | tr '\n' ' ')
PGBACKREST=$(chroot "$ROOT" dpkg-query -W -f '${Version}' pgbackrest)
printf 'KERNEL=%s\nPOSTGRES_MAJORS=%s\nPGBACKREST=%s\n' "$KVER" "$PGMAJORS" "$PGBACKREST" > "$OUT/image.env"
rm -rf "$ROOT"
echo "done"
