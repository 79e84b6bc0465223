# Runs as root on a node: replaces (or with empty LINES removes) the block of ID in /etc/hosts,
# in the same format dbctl uses for its own hosts file. Serialized by a lock, since several
# register steps edit /etc/hosts at once; written to a temporary file and renamed.
set -euo pipefail
ID="$1"; LINES="$2"
exec 9>/run/dbctl-hosts.lock
flock 9
TMP=$(mktemp /etc/.hosts.XXXXXX)
awk -v b="# dbctl:begin $ID" -v e="# dbctl:end $ID" \
  '$0 == b { skip = 1; next } skip && $0 == e { skip = 0; next } !skip { print }' /etc/hosts > "$TMP"
if [ -n "$LINES" ]; then
  printf '# dbctl:begin %s\n%s\n# dbctl:end %s\n' "$ID" "$LINES" "$ID" >> "$TMP"
fi
chmod 644 "$TMP"
mv "$TMP" /etc/hosts
