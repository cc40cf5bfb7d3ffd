import pytest

from featurizer.config import RunConfig
from featurizer.errors import ConfigError


def test_argv_round_trip_keeps_every_option():
    config = RunConfig(
        input="s3a://b/in",
        output="/tmp/out",
        pca_k=32,
        batch_size=16,
        limit=500,
        overwrite=True,
        conf=("spark.x=1", "spark.y=a=b"),
    )
    argv = config.to_argv()
    assert RunConfig.from_argv(argv) == config
    assert "--pca-variance" not in argv  # defaults are omitted


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pca_k": 0}, "--pca-k"),
        ({"pca_k": 1281}, "--pca-k"),
        ({"pca_variance": 1.5}, "--pca-variance"),
        ({"sample_fraction": 0.0}, "--sample-fraction"),
        ({"limit": 0}, "--limit"),
        ({"max_error_rate": -0.1}, "--max-error-rate"),
        ({"overwrite": True, "resume": True}, "exclude"),
        ({"conf": ("novalue",)}, "KEY=VALUE"),
    ],
)
def test_bad_options_fail_with_the_option_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(input="in", output="out", **changes)


def test_missing_input_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        RunConfig.from_argv(["--output", "x"])
    assert "--input" in capsys.readouterr().err


def test_weights_env_applies_only_to_the_default(monkeypatch):
    monkeypatch.setenv("FEATURIZER_WEIGHTS", "/w.h5")
    assert RunConfig(input="i", output="o").weights_spec == "/w.h5"
    assert RunConfig(input="i", output="o", weights="/x.h5").weights_spec == "/x.h5"


def test_int8_needs_the_tflite_engine():
    with pytest.raises(ConfigError, match="--engine tflite"):
        RunConfig(input="i", output="o", engine="keras", precision="int8")
    assert RunConfig(input="i", output="o", precision="int8").precision == "int8"
