#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the tests (Debian's slurmctld, slurmd, slurm-client
# and munge; root only, since slurmd starts jobs as their users):
#
#   tests/local-slurm.sh start DIR    # config, state and logs in DIR; returns once the node is idle
#   tests/local-slurm.sh stop DIR     # stops the daemons this script started there, by their pids
#
# Clients then need SLURM_CONF=DIR/slurm.conf. Its own munged (socket and key in DIR) and its
# own ports, so a Slurm or munge already on the machine is left alone. The node has the
# machine's CPUs and memory, and features a100 and h100, so sweeps over GPU types can be tried
# with --constraint (there are no GPUs: --gres would need device files).
set -euo pipefail
die() { echo "local-slurm.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: local-slurm.sh start|stop DIR"
cmd="$1"
dir="$(realpath -m "$2")"
conf="$dir/slurm.conf"

stop_pidfile() {
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

case "$cmd" in
start)
    [ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as the users who submit them)"
    for b in munged mungekey slurmctld slurmd sbatch sinfo; do
        command -v "$b" >/dev/null || die "$b not found: apt-get install slurmctld slurmd slurm-client munge"
    done
    mkdir -p "$dir"/{state,spool,log,munge}
    chmod 700 "$dir/munge"
    [ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem_mb="$(awk '/MemTotal/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)"
    cat > "$conf" <<CONF
# Written by tests/local-slurm.sh: a one-node test cluster.
ClusterName=tch-kernel-test
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# Time limits in tests are minutes: let the controller look at them often.
SlurmctldTimeout=30
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Features=a100,h100 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    slurmctld -f "$conf"
    slurmd -f "$conf"
    export SLURM_CONF="$conf"
    for _ in $(seq 600); do
        state="$(sinfo -h -o %t 2>/dev/null || true)"
        [ "$state" = idle ] && { echo "local Slurm is up: SLURM_CONF=$conf"; exit 0; }
        sleep 0.1
    done
    echo "--- slurmctld.log" >&2; tail -20 "$dir/log/slurmctld.log" >&2 || true
    echo "--- slurmd.log" >&2; tail -20 "$dir/log/slurmd.log" >&2 || true
    "$0" stop "$dir"
    die "the node did not become idle in 60 s (state: ${state:-none})"
    ;;
stop)
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munge/munged.pid"
    ;;
*)
    die "usage: local-slurm.sh start|stop DIR"
    ;;
esac
