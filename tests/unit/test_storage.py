import os

import pytest

from featurizer import storage
from featurizer.errors import ConfigError


def test_plain_paths_become_absolute_file_uris():
    assert storage.normalize("data/x/") == "file://" + os.path.abspath("data/x")
    assert storage.normalize("file:/tmp/a b") == "file:///tmp/a b"
    assert storage.normalize("s3a://bucket/prefix/") == "s3a://bucket/prefix"


def test_s3_uri_without_bucket_is_refused():
    with pytest.raises(ConfigError, match="bucket"):
        storage.normalize("s3a://")


def test_is_inside_respects_path_boundaries_and_s3_aliases():
    assert storage.is_inside("file:///data/in/out", "file:///data/in")
    assert storage.is_inside("file:///data/in", "file:///data/in")
    assert not storage.is_inside("file:///data/input2", "file:///data/in")
    assert storage.is_inside("s3a://b/in/out", "s3://b/in")


def test_s3a_settings_follow_the_aws_endpoint_variables():
    conf = storage.s3a_hadoop_conf({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert conf["fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["fs.s3a.path.style.access"] == "true"
    assert conf["fs.s3a.connection.ssl.enabled"] == "false"
    assert storage.s3a_hadoop_conf({}) == {}


def test_local_paths_from_both_spellings_of_a_file_uri():
    assert storage.local_path("file:///data/in/Kiwi/ a.jpg") == "/data/in/Kiwi/ a.jpg"
    assert storage.local_path("file:/data/in/Kiwi/a b .jpg") == "/data/in/Kiwi/a b .jpg"
    assert storage.local_path("s3a://bucket/file:/x") is None
    assert storage.local_path("/data/in") is None
