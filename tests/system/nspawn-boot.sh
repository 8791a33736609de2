#!/bin/bash
# Boot ROOTFS with systemd as PID 1 (systemd-nspawn, changes discarded) and keep it up until
# stdin closes. Prints "LEADER=<pid>" once the container's systemd reports it is running, so
# the caller can drive it with nsenter -t <pid> -a.
#   nspawn-boot.sh ROOTFS SOURCE_TREE TIMEOUT_SECONDS
# nspawn --keep-unit creates cgroups under its own; started from a root cgroup that would
# rearrange the host's tree, so this script first moves itself into child cgroups of its
# current ones (for the hierarchies nspawn touches) and removes them afterwards.
set -u
root=$1
source=$2
limit=$3
name=arqond-nspawn-$$
moved=()

cgroup_dir() {  # hierarchy mount point for a /proc/self/cgroup controllers field
    case $1 in
        name=systemd) echo /sys/fs/cgroup/systemd ;;
        "") echo /sys/fs/cgroup/unified ;;
        *) echo "/sys/fs/cgroup/$1" ;;
    esac
}

cleanup() {
    [ -n "${ns:-}" ] && kill -TERM "$ns" 2>/dev/null && wait "$ns" 2>/dev/null
    for entry in "${moved[@]}"; do
        dir=${entry%|*}
        parent=${entry#*|}
        echo $$ 2>/dev/null >"$parent/cgroup.procs"
        # nspawn leaves payload/supervisor below; remove the deepest first.
        find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
}
trap cleanup EXIT

# Read it whole first: it changes as this script moves itself.
groups=$(cat /proc/self/cgroup)
while IFS=: read -r _ controllers path; do
    case $controllers in
        name=systemd|""|cpu|pids|memory) ;;
        *) continue ;;
    esac
    base=$(cgroup_dir "$controllers")
    [ -d "$base" ] || continue
    parent=$base${path%/}
    mkdir -p "$parent/$name" && echo $$ >"$parent/$name/cgroup.procs" || {
        echo "cannot move into $parent/$name" >&2
        exit 1
    }
    moved+=("$parent/$name|$parent")
done <<<"$groups"

# A machine name of its own, so that two test runs can boot the same cached tree at once.
timeout "$limit" systemd-nspawn -D "$root" -M "arqond-test-$$" --register=no --keep-unit -b \
    --volatile=overlay \
    --bind-ro="$source":/opt/arqond/src --console=passive -q >"${NSPAWN_LOG:-/dev/null}" 2>&1 &
ns=$!
leader=
for _ in $(seq 200); do
    leader=$(pgrep -P "$ns" -x systemd || true)
    [ -z "$leader" ] && for child in $(pgrep -P "$ns"); do
        leader=$(pgrep -P "$child" -x systemd || true)
        [ -n "$leader" ] && break
    done
    [ -n "$leader" ] && [ -S "/proc/$leader/root/run/systemd/private" ] && break
    kill -0 "$ns" 2>/dev/null || { echo "systemd-nspawn exited early" >&2; exit 1; }
    sleep 0.05
done
[ -n "$leader" ] || { echo "no systemd in the container" >&2; exit 1; }
state=$(timeout 60 nsenter -t "$leader" -a systemctl is-system-running --wait)
echo "LEADER=$leader STATE=$state"
# Until the caller is done.
cat >/dev/null
