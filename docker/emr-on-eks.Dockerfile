# The featurizer job for Amazon EMR on EKS: the release's Spark image plus the job's Python
# packages (pinned by constraints.txt) in a Python 3.11 virtualenv, the job's entry point
# and the MobileNetV2 weights. Build with `make emr-image` (see emr-on-eks/README.md):
# hack/emr-context.sh fills the context (wheels for CPython 3.11 manylinux x86_64, the
# featurizer wheel, weights, main.py), so the build itself needs no network.
#
# Python: emr-7.x images default to python3 = 3.9, which TensorFlow 2.21 and numpy 2.4 no
# longer support; the releases also ship Python 3.11 (EMR release guide: "Python 3.9, 3.11"),
# which the job uses via spark.pyspark.python / PYSPARK_PYTHON = the venv below.
# Nothing is written under the paths EMR mounts over (/var/log/fluentd, /var/log/spark/user,
# /var/log/spark/apps, /mnt, /tmp, /home/hadoop): everything lives in /opt/featurizer.
ARG BASE_IMAGE=public.ecr.aws/emr-on-eks/spark/emr-7.13.0:latest

# ---- venv: the job's packages, built in a throw-away stage (no wheels in the image) ----
# hadolint ignore=DL3006
FROM ${BASE_IMAGE} AS venv
# A throw-away build stage: root to install, never run. EMR's images name the user.
# hadolint ignore=DL3002,DL3066
USER root
# Amazon Linux 2023 provides python3.11 as a package if the base lacks it.
# hadolint ignore=DL3041
RUN command -v python3.11 >/dev/null || { dnf install -y python3.11 && dnf clean all; }
COPY constraints.txt /tmp/featurizer/constraints.txt
COPY wheels/ /tmp/featurizer/wheels/
COPY app/ /tmp/featurizer/app/
# EMR brings Spark (and pyspark through SPARK_HOME/python): pyspark is not installed here.
# TensorFlow's C++ headers serve only custom-op builds: removed.
RUN python3.11 -m venv /opt/featurizer/venv \
 && /opt/featurizer/venv/bin/pip install --no-cache-dir --no-index \
      --find-links /tmp/featurizer/wheels -c /tmp/featurizer/constraints.txt \
      /tmp/featurizer/app/featurizer-*.whl \
 && /opt/featurizer/venv/bin/pip check \
 && rm -rf /opt/featurizer/venv/lib/python3.11/site-packages/tensorflow/include
# COPY keeps the build context's modes, which depend on the host's umask (0600 under 077):
# the files the hadoop user reads get theirs here, so the image does not depend on the host.
COPY models/ /tmp/featurizer/files/models/
COPY main.py decom.sh /tmp/featurizer/files/
RUN chmod -R u=rwX,go=rX /tmp/featurizer/files \
 && chmod 0755 /tmp/featurizer/files/decom.sh

# ---- the image ----
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# hadolint ignore=DL3066
USER root
# hadolint ignore=DL3041
RUN command -v python3.11 >/dev/null || { dnf install -y python3.11 && dnf clean all; }
COPY --from=venv /opt/featurizer/venv /opt/featurizer/venv
COPY --from=venv /tmp/featurizer/files/models/ /opt/featurizer/models/
COPY --from=venv /tmp/featurizer/files/main.py /opt/featurizer/main.py
# The executors' preStop hook when spark.decommission.enabled (spark.kubernetes.decommission.script).
COPY --from=venv /tmp/featurizer/files/decom.sh /opt/decom.sh
ENV FEATURIZER_WEIGHTS_DIR=/opt/featurizer/models \
    PYSPARK_PYTHON=/opt/featurizer/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/featurizer/venv/bin/python \
    TF_CPP_MIN_LOG_LEVEL=2
LABEL org.opencontainers.image.title="featurizer-emr-on-eks" \
      org.opencontainers.image.description="featurizer job for Amazon EMR on EKS" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.featurizer.job="local:///opt/featurizer/main.py"
# EMR on EKS requires its images to end as the hadoop user, named as in its base images.
# hadolint ignore=DL3066
USER hadoop:hadoop
