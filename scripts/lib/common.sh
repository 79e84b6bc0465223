# Sourced by scripts/setup and scripts/test: the first-run checks both share.

# Fails at once (before any compile) when a step that needs root cannot get it.
# Root, or passwordless sudo, is needed for apt-get and for the image builds (debootstrap, chroot).
require_root_or_sudo() {
  [ "$(id -u)" -eq 0 ] && return 0
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    return 0
  fi
  echo "$1: needs root for apt-get and the image build (debootstrap, chroot)." >&2
  echo "$1: run it as root, or give $(id -un) passwordless sudo (the builds then run as root, their output is yours)." >&2
  exit 1
}

# Runs "$@" as root, keeping this user's cache directory, then gives the cache back to the user.
as_root_keeping_cache() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
    return
  fi
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}"
  mkdir -p "$cache/dbctl"
  local rc=0
  sudo -n env HOME="$HOME" XDG_CACHE_HOME="$cache" PATH="$PATH" "$@" || rc=$?
  sudo -n chown -R "$(id -u):$(id -g)" "$cache/dbctl"
  return "$rc"
}

require_cargo() {
  command -v cargo >/dev/null 2>&1 || {
    echo "$1: cargo not found; install a Rust toolchain (https://rustup.rs), then run again" >&2
    exit 1
  }
}
