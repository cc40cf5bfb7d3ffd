#!/bin/bash
# Spark-on-Kubernetes entrypoint, same contract as apache/spark-docker's:
#   driver ARGS...    spark-submit in client mode inside the driver pod (ARGS from Spark)
#   executor          the Kubernetes executor backend, configured by SPARK_* env vars
#   anything else     run as given (spark-submit, featurizer, python, spark-class ...)
# Spark's Kubernetes backend and the spark-operator start pods with these arguments.
set -eo pipefail

# Arbitrary UIDs (e.g. OpenShift) have no passwd entry; Spark/Hadoop need a user name.
fake_passwd_entry() {
  local uid gid wrapper
  uid=$(id -u); gid=$(id -g)
  getent passwd "$uid" >/dev/null 2>&1 && return 0
  for wrapper in {/usr,}/lib{/*,}/libnss_wrapper.so; do
    [ -s "$wrapper" ] || continue
    NSS_WRAPPER_PASSWD=$(mktemp); NSS_WRAPPER_GROUP=$(mktemp)
    printf 'spark:x:%s:%s:%s:%s:/bin/false\n' "$uid" "$gid" "${SPARK_USER_NAME:-anonymous uid}" \
      "$SPARK_HOME" >"$NSS_WRAPPER_PASSWD"
    printf 'spark:x:%s:\n' "$gid" >"$NSS_WRAPPER_GROUP"
    export LD_PRELOAD=$wrapper NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    return 0
  done
}

# Root (e.g. a pod with runAsUser 0) drops to the spark user, as the upstream image does.
as_spark() {
  if [ "$(id -u)" -eq 0 ]; then
    echo setpriv --reuid=spark --regid=spark --init-groups
  fi
}

spark_classpath() {
  local cp="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*"
  [ -n "$SPARK_EXTRA_CLASSPATH" ] && cp="$cp:$SPARK_EXTRA_CLASSPATH"
  [ -n "${HADOOP_CONF_DIR+x}" ] && cp="$HADOOP_CONF_DIR:$cp"
  cp="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$cp"
  echo "$cp:$PWD"   # SPARK-43540: the working directory is on the executor classpath
}

case "$1" in
  driver)
    shift
    CMD=("$SPARK_HOME/bin/spark-submit"
         --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS"
         --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS"
         --deploy-mode client
         "$@")
    ;;
  executor)
    shift
    JAVA_OPTS=()
    for v in "${!SPARK_JAVA_OPT_@}"; do JAVA_OPTS+=("${!v}"); done
    CMD=("$JAVA_HOME/bin/java" "${JAVA_OPTS[@]}"
         -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY"
         -cp "$(spark_classpath)${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}"
         org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
         --driver-url "$SPARK_DRIVER_URL"
         --executor-id "$SPARK_EXECUTOR_ID"
         --cores "$SPARK_EXECUTOR_CORES"
         --app-id "$SPARK_APPLICATION_ID"
         --hostname "$SPARK_EXECUTOR_POD_IP"
         --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID"
         --podName "$SPARK_EXECUTOR_POD_NAME")
    ;;
  *)
    # Pass-through, under tini so signals reach the process and zombies are reaped.
    fake_passwd_entry
    exec /usr/bin/tini -s -- "$@"
    ;;
esac

fake_passwd_entry
# shellcheck disable=SC2046  # as_spark prints a command prefix or nothing
exec $(as_spark) /usr/bin/tini -s -- "${CMD[@]}"
