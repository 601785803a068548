#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and for trying cg-launch without a cluster.
#
#   launch/local_slurm.sh start DIR   install Debian's slurmctld/slurmd/slurm-client/munge if missing (root;
#                                     launch/system_packages.sh slurm, as `make test` does), write
#                                     DIR/slurm.conf, start munged, slurmctld and slurmd, wait until the
#                                     node is idle, then print the line to eval: export SLURM_CONF=...
#   launch/local_slurm.sh stop DIR    stop the daemons started in DIR, by the pids in DIR/run/*.pid
#
# Everything (config, munge key and socket, state, spool, logs, pid files) lives under DIR, on free
# ports, so it never touches /etc/slurm or a system munged. Runs as root (SlurmUser=root). No accounting
# database: `sacct` does not work on this cluster (use squeue / cg-launch status).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run=$dir/run

die() { echo "local_slurm: $*" >&2; exit 1; }

install_if_missing() {  # the same install as `make test`'s (waits for a dpkg lock held by another apt-get)
    local cmd missing=()
    for cmd in slurmctld slurmd sbatch munged mungekey; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
    [[ ${#missing[@]} -eq 0 ]] && return
    [[ $(id -u) -eq 0 ]] \
        || die "${missing[*]} not installed, and installing them needs root: sudo $here/system_packages.sh slurm"
    "$here/system_packages.sh" slurm || die "installing SLURM and munge failed (see above)"
    hash -r
    for cmd in "${missing[@]}"; do command -v "$cmd" >/dev/null || die "$cmd is still not installed"; done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

write_config() {
    local node cpus mem_mb
    node=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$run"
    cat >"$conf" <<EOF
# written by launch/local_slurm.sh: a one-node cluster for tests
ClusterName=cgtrain-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$run/munge.socket,cred_expire=5
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install_if_missing
    [[ -f $run/slurmctld.pid ]] && kill -0 "$(cat "$run/slurmctld.pid")" 2>/dev/null \
        && die "a cluster is already running in $dir (run: $0 stop $dir)"
    write_config
    export SLURM_CONF=$conf
    [[ -f $run/munge.key ]] || mungekey -c -k "$run/munge.key"
    chmod 600 "$run/munge.key"
    munged --force --socket="$run/munge.socket" --key-file="$run/munge.key" --pid-file="$run/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$run/munged.seed"
    slurmctld -f "$conf"
    slurmd -f "$conf"
    for _ in $(seq 1 120); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "export SLURM_CONF=$conf"
            return
        fi
        sleep 0.5
    done
    die "the node did not become idle within 60 s (logs: $dir/log)"
}

stop() {  # each daemon takes ~2 s to exit after SIGTERM: signal all three, then wait for each
    local name pid pids=()
    for name in slurmd slurmctld munged; do
        [[ -f $run/$name.pid ]] || continue
        pid=$(cat "$run/$name.pid")
        kill "$pid" 2>/dev/null && pids+=("$pid")
        rm -f "$run/$name.pid"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    done
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
