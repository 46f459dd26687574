#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for checking --submit end to end.
#
#   bash scripts/slurm_localhost.sh start   # installs slurm-wlm + munge (Debian) if needed and
#                                            # starts munged, slurmctld, slurmd
#   export SLURM_CONF=/tmp/spinconv-slurm/slurm.conf   # then sbatch / --submit use it
#   bash scripts/slurm_localhost.sh stop    # stops the daemons, removes the state folder
#
# Needs root (apt-get, munge's key, the daemons). Everything lives under $SLURM_LOCAL_DIR
# (default /tmp/spinconv-slurm); the ports are picked free at start.
set -euo pipefail

SLURM_LOCAL_DIR=${SLURM_LOCAL_DIR:-/tmp/spinconv-slurm}

_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

slurm_start() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    mkdir -p "$SLURM_LOCAL_DIR"/{state,spool,log}
    local host cpus mem_mb conf
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    conf="$SLURM_LOCAL_DIR/slurm.conf"
    cat >"$conf" <<EOF
ClusterName=spinconv-local
SlurmctldHost=$host
SlurmctldPort=$(_free_port)
SlurmdPort=$(_free_port)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SLURM_LOCAL_DIR/state
SlurmdSpoolDir=$SLURM_LOCAL_DIR/spool
SlurmctldPidFile=$SLURM_LOCAL_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_LOCAL_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_LOCAL_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_LOCAL_DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged
    export SLURM_CONF="$conf"
    slurmctld -f "$conf"
    slurmd -f "$conf"
    local tries=0
    until sinfo -h -o '%t' 2>/dev/null | grep -q idle; do
        tries=$((tries + 1))
        if [ "$tries" -gt 60 ]; then
            echo "slurm did not come up; logs in $SLURM_LOCAL_DIR/log" >&2
            return 1
        fi
        sleep 1
    done
    echo "slurm up: SLURM_CONF=$SLURM_CONF ($(sinfo -h -o '%N %c CPUs %t'))"
}

slurm_stop() {
    local pid
    for pid in "$SLURM_LOCAL_DIR/slurmd.pid" "$SLURM_LOCAL_DIR/slurmctld.pid"; do
        if [ -s "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; fi
    done
    sleep 1
    rm -rf "$SLURM_LOCAL_DIR"
    echo "slurm stopped"
}

case "${1:-}" in
    start) slurm_start ;;
    stop) slurm_stop ;;
    *) echo "usage: bash scripts/slurm_localhost.sh start|stop" >&2; exit 2 ;;
esac
