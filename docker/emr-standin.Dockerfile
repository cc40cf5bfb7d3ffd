# A stand-in for the Amazon EMR on EKS Spark base image, which cannot be pulled here. It is
# laid out like emr-7.x's: user hadoop, Spark 3.5 (the release's minor) at /usr/lib/spark
# with spark-submit on the PATH and config in /etc/spark/conf, Java 17, and the release's
# second Python, python3.11 (the default python3 of emr-7.x is 3.9). It only serves to build
# docker/emr-on-eks.Dockerfile unchanged and run the job in it (make emr-test).
#
# Context (hack/emr-standin.sh): spark/ = the pyspark 3.5.x wheel's package directory, which
# is a complete Spark distribution (bin/, jars/, python/lib/pyspark.zip + py4j).
ARG BASE_IMAGE=featurizer-base:bookworm
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    SPARK_HOME=/usr/lib/spark \
    SPARK_CONF_DIR=/etc/spark/conf

# Debian bookworm's python3 is 3.11, like EMR's python3.11. Like Amazon Linux (and unlike
# Debian) the image lets root pip-install into the system Python: no EXTERNALLY-MANAGED.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless python3 python3-venv python3-pip procps \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && groupadd --gid 1000 hadoop \
 && useradd --uid 999 --gid hadoop --create-home --home-dir /home/hadoop hadoop \
 && mkdir -p /etc/spark/conf /var/log/spark/user /var/log/spark/apps /var/log/fluentd /mnt

COPY spark/ /usr/lib/spark/
RUN ln -s /usr/lib/spark/bin/spark-submit /usr/bin/spark-submit \
 && ln -s /usr/lib/spark/bin/spark-class /usr/bin/spark-class

# hadolint ignore=DL3066
USER hadoop:hadoop
WORKDIR /home/hadoop
