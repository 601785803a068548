#!/usr/bin/env bash
# The Debian packages that some tests (and launch/local_slurm.sh) need, installed once, before the tests.
#
#   launch/system_packages.sh [SET...]            install the missing packages of SET (default: every set)
#   launch/system_packages.sh --missing [SET...]  print the missing packages (nothing if all are installed)
#
# `make test` runs it before pytest (its stamp: .venv/.cg-train-system-packages); launch/local_slurm.sh start
# runs it for `slurm`. Tests never install anything: without the packages they skip, naming this script.
# As root it prints one line (what it installs, and why), waits for a dpkg/apt lock that another apt-get or
# dpkg holds instead of failing, and runs `apt-get update` only when the package lists are empty (or once
# more when the install fails on stale lists). Not root: one line saying what is missing, and exit 0.
set -euo pipefail

# One line per set: NAME|PACKAGES|WHY (a new set is one more line).
SETS=(
    "slurm|slurmctld slurmd slurm-client munge|tests/test_slurm.py starts a real one-node SLURM cluster"
    "browser|chromium chromium-driver|the explorer's headless-browser test"
)
LOCK_TIMEOUT=${CG_TRAIN_APT_LOCK_TIMEOUT:-1800}  # seconds to wait for another apt-get/dpkg to finish
LOCK_FILE=/var/lock/cg-train-system-packages.lock  # one install of ours at a time

say() { echo "system_packages: $*" >&2; }
joined() { local IFS=$'\t'; sed 's/\t/; /g' <<<"$*"; }

mode=install
if [[ ${1:-} == --missing ]]; then mode=missing; shift; fi
wanted=("$@")

set_field() {  # set_field NAME FIELD(2=packages, 3=why)
    local entry
    for entry in "${SETS[@]}"; do
        [[ ${entry%%|*} == "$1" ]] && { cut -d'|' -f"$2" <<<"$entry"; return; }
    done
    say "unknown package set '$1' (known: $(printf '%s\n' "${SETS[@]}" | cut -d'|' -f1 | tr '\n' ' '))"
    exit 2
}
if [[ ${#wanted[@]} -eq 0 ]]; then
    mapfile -t wanted < <(printf '%s\n' "${SETS[@]}" | cut -d'|' -f1)
fi
for name in "${wanted[@]}"; do set_field "$name" 1 >/dev/null; done  # an unknown set stops here

installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

missing_of() {  # missing_of SET: its packages that are not installed
    local pkg
    for pkg in $(set_field "$1" 2); do installed "$pkg" || echo "$pkg"; done
}

# "pkgs (why); pkgs (why)" and the package list, for the sets with something missing
plan() {
    local name miss
    summary=() packages=()
    for name in "${wanted[@]}"; do
        mapfile -t miss < <(missing_of "$name")
        [[ ${#miss[@]} -eq 0 ]] && continue
        summary+=("${miss[*]} ($(set_field "$name" 3))")
        packages+=("${miss[@]}")
    done
}

if ! command -v dpkg-query >/dev/null; then
    [[ $mode == missing ]] \
        || say "not a Debian system (no dpkg-query): install the packages of ${wanted[*]} by hand; their tests skip"
    exit 0
fi
plan
if [[ $mode == missing ]]; then
    [[ ${#packages[@]} -eq 0 ]] || printf '%s\n' "${packages[@]}"
    exit 0
fi
[[ ${#packages[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
    say "not root, not installing: $(joined "${summary[@]}"); those tests skip (run this script as root to install)"
    exit 0
fi

exec 9>"$LOCK_FILE"
flock -w "$LOCK_TIMEOUT" 9 || { say "another $0 held $LOCK_FILE for ${LOCK_TIMEOUT} s"; exit 1; }
plan  # what an install of ours that held the lock before us left to do
[[ ${#packages[@]} -eq 0 ]] && exit 0

say "installing $(joined "${summary[@]}")"
holder=$(lslocks -n -o PID,PATH 2>/dev/null | awk '$2 ~ "^/var/lib/(dpkg/lock|apt/lists/lock)" {print $1; exit}')
[[ -z $holder ]] || say "waiting (up to ${LOCK_TIMEOUT} s) for $(cat "/proc/$holder/comm" 2>/dev/null) (pid $holder)" \
    "to release the apt/dpkg lock"
log=$(mktemp "${TMPDIR:-/tmp}/cg-train-system-packages.XXXXXX.log")
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -q -y -o "DPkg::Lock::Timeout=$LOCK_TIMEOUT")
lists_empty() { ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
updated=0
update() {  # apt-get update does not wait for the lists lock (DPkg::Lock::Timeout is dpkg's): retry it
    local deadline=$((SECONDS + LOCK_TIMEOUT)) out
    updated=1
    until out=$("${apt[@]}" update 2>&1); do
        echo "$out" >>"$log"
        [[ $out == *"Could not get lock"* && $SECONDS -lt $deadline ]] || return 1
        sleep 5
    done
    echo "$out" >>"$log"
}
if lists_empty; then update || { say "apt-get update failed (log: $log)"; tail -n 5 "$log" >&2; exit 1; }; fi
install=("${apt[@]}" install --no-install-recommends "${packages[@]}")
if ! "${install[@]}" >>"$log" 2>&1; then
    # stale package lists (a version that is gone from the mirror): update once and try again
    if [[ $updated -eq 1 ]] || ! update || ! "${install[@]}" >>"$log" 2>&1; then
        say "apt-get install ${packages[*]} failed (log: $log)"
        tail -n 5 "$log" >&2
        exit 1
    fi
fi
rm -f "$log"
