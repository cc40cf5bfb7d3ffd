#!/usr/bin/env bash
# Fetch the S3A connector for the Hadoop that PySpark ships, checksum-verified, and print
# the jars as one comma-separated list (for spark.jars / FEATURIZER_JARS):
#
#   FEATURIZER_JARS=$(hack/fetch-jars.sh) featurizer run --input s3a://... ...
#   hack/fetch-jars.sh --copy DIR      also copy the jars into DIR (the image's build context)
#
# Which jars: org.apache.hadoop:hadoop-aws:$HADOOP_VERSION and its compile-scope
# dependencies that PySpark does not already bring (the AWS SDK v2 `bundle` and
# `analyticsaccelerator-s3`), at the versions hadoop-aws's own POM (via its parent,
# hadoop-project) declares: read from Maven Central, never guessed.
# Verification: Maven Central's .sha1 for each download AND the sha256 pinned in
# docker/jars.sha256 (committed): a version without a pinned sha256 is refused.
# The SDK bundle (655 MB: every AWS service's client) is slimmed to the clients S3A can load
# (S3; STS, SSO, SSO-OIDC and Sign-In for the credential chain, e.g. IRSA's web identity) plus
# the SDK core: 19 MB. Derived from the verified bundle, never downloaded as such.
# Cache: ~/.cache/featurizer/jars/ (FEATURIZER_JARS_CACHE moves it; .ci/run starts from an
# empty one). Every call re-verifies what it reuses: each download against docker/jars.sha256,
# the slimmed bundle against the digest recorded when it was made from the verified bundle
# by the current recipe. Files are 0644 whatever the umask: the image and other users read them.
# Progress goes to stderr; only the list goes to stdout.
set -euo pipefail

HADOOP_VERSION=${FEATURIZER_HADOOP_VERSION:-3.5.0}   # = hadoop-client-api-*.jar in PySpark 4.3.0
MAVEN=${FEATURIZER_MAVEN_URL:-https://repo1.maven.org/maven2}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO_DIR/hack/lib.sh"
CACHE=${FEATURIZER_JARS_CACHE:-$FEATURIZER_CACHE/jars}
PINS=$REPO_DIR/docker/jars.sha256
LIST=$CACHE/hadoop-aws-$HADOOP_VERSION.deps   # group:artifact:version lines from the POMs


copy_to=
if [[ ${1:-} == --copy ]]; then
  [[ -n ${2:-} ]] || die "usage: hack/fetch-jars.sh [--copy DIR]"
  copy_to=$2
fi

jar_name() { local a=${1#*:}; echo "${a%%:*}-${1##*:}.jar"; }        # g:a:v -> a-v.jar
jar_url() { local g=${1%%:*} r=${1#*:}; echo "$MAVEN/${g//.//}/${r%%:*}/${r##*:}/$(jar_name "$1")"; }

pinned_ok() {  # file in $CACHE whose sha256 is pinned and matches
  local name=$1 want
  want=$(awk -v n="$name" '$2 == n { print $1 }' "$PINS")
  [[ -n $want ]] || return 1
  [[ -f $CACHE/$name ]] && [[ $(sha256sum "$CACHE/$name" | cut -d' ' -f1) == "$want" ]]
}

# The artifacts, from hadoop-aws's POM: compile-scope dependencies whose version is
# managed by the parent hadoop-project POM, minus what PySpark already ships.
resolve() {
  local tmp; tmp=$(mktemp -d)
  curl -fsS --retry 3 -m 60 -o "$tmp/aws.pom" \
    "$MAVEN/org/apache/hadoop/hadoop-aws/$HADOOP_VERSION/hadoop-aws-$HADOOP_VERSION.pom"
  curl -fsS --retry 3 -m 60 -o "$tmp/project.pom" \
    "$MAVEN/org/apache/hadoop/hadoop-project/$HADOOP_VERSION/hadoop-project-$HADOOP_VERSION.pom"
  python3 - "$tmp/aws.pom" "$tmp/project.pom" "$HADOOP_VERSION" <<'PY'
import re, sys
import xml.etree.ElementTree as ET

NS = {"m": "http://maven.apache.org/POM/4.0.0"}
# Compile-scope deps of hadoop-aws that pip's PySpark already ships (shaded Hadoop client).
SHIPPED = ("org.apache.hadoop:", "org.slf4j:", "com.fasterxml.")
aws, project, hadoop = (ET.parse(sys.argv[1]).getroot(), ET.parse(sys.argv[2]).getroot(),
                        sys.argv[3])
props = {p.tag.split("}")[1]: (p.text or "").strip() for p in project.find("m:properties", NS)}
props["project.version"] = hadoop
managed = {}
for dep in project.findall("m:dependencyManagement/m:dependencies/m:dependency", NS):
    key = dep.findtext("m:groupId", "", NS) + ":" + dep.findtext("m:artifactId", "", NS)
    managed.setdefault(key, dep.findtext("m:version", "", NS))
def expand(text):
    return re.sub(r"\$\{([^}]+)\}", lambda m: expand(props[m.group(1)]), text)
print(f"org.apache.hadoop:hadoop-aws:{hadoop}")
for dep in aws.findall("m:dependencies/m:dependency", NS):
    key = dep.findtext("m:groupId", "", NS) + ":" + dep.findtext("m:artifactId", "", NS)
    scope = dep.findtext("m:scope", "compile", NS)
    if scope != "compile" or dep.findtext("m:type", "jar", NS) != "jar" or key.startswith(SHIPPED):
        continue
    version = dep.findtext("m:version", None, NS) or managed.get(key)
    if not version:
        sys.exit(f"no version for {key} in hadoop-project {hadoop}")
    print(f"{key}:{expand(version)}")
PY
  rm -rf "$tmp"
}

fetch() {  # g:a:v -> $CACHE/a-v.jar, verified by .sha1 (Maven Central) and pinned sha256
  local gav=$1 name url tmp sha1
  name=$(jar_name "$gav"); url=$(jar_url "$gav")
  if pinned_ok "$name"; then chmod 0644 "$CACHE/$name"; return 0; fi   # an older cache may hold 0600
  grep -q " $name\$" "$PINS" ||
    die "$name has no sha256 in docker/jars.sha256; verify it and add its \`sha256sum\` line"
  log "downloading $url"
  tmp=$(mktemp "$CACHE/.$name.XXXXXX")
  curl -fsS --retry 3 -m 900 -o "$tmp" "$url" || { rm -f "$tmp"; die "download failed: $url"; }
  sha1=$(curl -fsS --retry 3 -m 60 "$url.sha1" | cut -c1-40)
  [[ $(sha1sum "$tmp" | cut -d' ' -f1) == "$sha1" ]] || { rm -f "$tmp"; die "$name: sha1 mismatch with $url.sha1"; }
  chmod 0644 "$tmp"                     # mktemp made it 0600
  mv "$tmp" "$CACHE/$name"
  pinned_ok "$name" || { rm -f "$CACHE/$name"; die "$name: sha256 differs from docker/jars.sha256"; }
}

SDK_SERVICES=${FEATURIZER_SDK_SERVICES:-s3 sts sso ssooidc signin}
# argv: bundle jar, output jar, the services to keep. Copies every entry but the other
# services' clients.
SLIM_PY='
import sys, zipfile

source, target, keep = sys.argv[1], sys.argv[2], set(sys.argv[3:])
prefix = ["software", "amazon", "awssdk", "services"]
with zipfile.ZipFile(source) as jar, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
    for entry in jar.infolist():
        parts = entry.filename.split("/")
        if parts[:4] == prefix and len(parts) > 5 and parts[4] not in keep:
            continue                                    # a client S3A never loads
        out.writestr(entry, jar.read(entry), compress_type=entry.compress_type)
'

slim_bundle() {  # $CACHE/bundle-V.jar (verified) -> $CACHE/bundle-V-<services>.jar (path on stdout)
  local bundle=$1 slim recipe stamp
  slim=${bundle%.jar}-${SDK_SERVICES// /-}.jar
  stamp=$slim.stamp                                # "<recipe> <sha256 of the slim jar>"
  # The recipe: which bundle (its pinned sha256), which services, which code made it.
  recipe=$({ sha256sum "$bundle" | cut -d' ' -f1; echo "$SDK_SERVICES"; echo "$SLIM_PY"; } |
           sha256sum | cut -c1-16)
  if [[ -s $slim && -s $stamp && $(cat "$stamp") == "$recipe $(sha256sum "$slim" | cut -d' ' -f1)" ]]; then
    chmod 0644 "$slim"; echo "$slim"; return 0
  fi
  log "slimming ${bundle##*/} to the SDK core + services: $SDK_SERVICES"
  rm -f "$slim" "$stamp"
  # shellcheck disable=SC2086  # one argument per service
  python3 -c "$SLIM_PY" "$bundle" "$slim.tmp" $SDK_SERVICES || { rm -f "$slim.tmp"; die "could not slim $bundle"; }
  chmod 0644 "$slim.tmp"
  mv "$slim.tmp" "$slim"
  echo "$recipe $(sha256sum "$slim" | cut -d' ' -f1)" >"$stamp"
  echo "$slim"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9        # parallel callers share one download
if [[ ! -s $LIST ]]; then
  resolve >"$LIST.tmp" || { rm -f "$LIST.tmp"; die "could not read hadoop-aws $HADOOP_VERSION POMs from $MAVEN"; }
  mv "$LIST.tmp" "$LIST"
  log "hadoop-aws $HADOOP_VERSION needs: $(paste -sd' ' "$LIST")"
fi
jars=()
while read -r gav; do
  fetch "$gav"
  jar=$CACHE/$(jar_name "$gav")
  [[ $gav == software.amazon.awssdk:bundle:* ]] && jar=$(slim_bundle "$jar")
  jars+=("$jar")
done <"$LIST"
if [[ -n $copy_to ]]; then
  mkdir -p "$copy_to"
  for jar in "${jars[@]}"; do
    cmp -s "$jar" "$copy_to/${jar##*/}" 2>/dev/null || install -m 0644 "$jar" "$copy_to/"
  done
fi
(IFS=,; echo "${jars[*]}")
