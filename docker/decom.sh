#!/bin/bash
# Graceful decommissioning of a Spark executor, run by Kubernetes as the executor container's
# preStop hook when the pod is deleted (a spot interruption, a node drain, a scale-down).
# Spark adds that hook itself when spark.decommission.enabled is true, pointing it at
# spark.kubernetes.decommission.script (default: this file, /opt/decom.sh, as in the
# apache/spark images). Contract, as upstream: signal the executor JVM with SIGPWR (Spark's
# spark.executor.decommission.signal), which then stops taking tasks and migrates its blocks,
# and wait until it has exited (the pod's terminationGracePeriodSeconds bounds the wait).
# What happens goes to the container's log (PID 1's stdout) so `kubectl logs` shows it.
set -u

log() {
  local line
  line="featurizer decommission: $(date -u +%FT%TZ) $*"
  { echo "$line" >/proc/1/fd/1; } 2>/dev/null || echo "$line"
  { echo "$line" >>/dev/termination-log; } 2>/dev/null || true
}

pid=$(pgrep -o -f 'org.apache.spark.(scheduler.cluster.k8s.KubernetesExecutorBackend|executor.CoarseGrainedExecutorBackend)')
if [ -z "$pid" ]; then
  log "no executor JVM found: nothing to decommission"
  exit 0
fi
log "asking executor JVM $pid to decommission (SIGPWR)"
if ! kill -s PWR "$pid"; then
  log "could not signal $pid"
  exit 0
fi
start=$SECONDS
# The JVM exits once its blocks are migrated (or spark.executor.decommission.forceKillTimeout).
tail --pid="$pid" -f /dev/null
log "executor JVM $pid exited after $((SECONDS - start)) s"
