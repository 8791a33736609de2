#!/bin/sh
# Build (once) a Debian 12 root filesystem with systemd and a Python venv holding arqond's
# dependencies, for the system test that boots it with systemd-nspawn. The source tree is
# bind-mounted at boot, so the cached tree does not depend on the code under test.
#   build-rootfs.sh CACHE_DIR HOST_PYTHON
# Prints the rootfs path. Concurrent callers serialise on a lock; a half-built tree is never
# reused (the finished tree is renamed into place only when complete).
set -eu
cache=$1
python=$2
root=$cache/rootfs-bookworm-v2
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -x "$root/opt/arqond/venv/bin/python" ]; then
    echo "$root"
    exit 0
fi
work=$cache/.building-$$
rm -rf "$cache"/.building-*
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
: "${mirror:=http://deb.debian.org/debian}"
PATH=/usr/sbin:/usr/bin:/sbin:/bin debootstrap --variant=minbase \
    --include=systemd-sysv,dbus,python3,python3-venv,procps \
    bookworm "$work" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
    echo "debootstrap failed, see $cache/debootstrap.log:" >&2
    tail -n 20 "$cache/debootstrap.log" >&2
    exit 1
}
# Dependencies come as wheels built on the host, installed offline into the container's venv.
wheels=$work/opt/arqond/wheels
mkdir -p "$wheels"
"$python" -m pip wheel --quiet -w "$wheels" websockets orjson sdnotify inotify-simple python-daemon h11
chroot "$work" /usr/bin/python3 -m venv /opt/arqond/venv
chroot "$work" /opt/arqond/venv/bin/pip install --quiet --no-index --find-links /opt/arqond/wheels \
    websockets orjson sdnotify inotify-simple python-daemon h11
# The unit files refer to /usr/bin/arqond; this runs the bind-mounted source tree.
cat >"$work/usr/bin/arqond" <<'PY'
#!/opt/arqond/venv/bin/python
import sys
sys.path.insert(0, "/opt/arqond/src")
from arqond.app import main
sys.exit(main())
PY
chmod 755 "$work/usr/bin/arqond"
echo arqond-test >"$work/etc/hostname"
mv "$work" "$root"
echo "$root"
