"""The output's URI placeholders and its lease holder (output.py), without Spark."""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone

import pytest

from featurizer import output


def test_placeholders_give_each_run_its_own_output():
    day = datetime(2026, 12, 1, 23, 59, tzinfo=timezone.utc)
    assert output.expand("s3a://b/f/{date}", now=day) == "s3a://b/f/2026-12-01"
    assert (
        output.expand("s3a://b/f/{app}", "featurizer-1796000000")
        == "s3a://b/f/featurizer-1796000000"
    )
    assert output.expand("s3a://b/{app}/{date}", "x", now=day) == "s3a://b/x/2026-12-01"
    assert output.expand("s3a://b/set{a,b}") == "s3a://b/set{a,b}"  # other braces stay
    with pytest.raises(ValueError):
        output.expand("s3a://b/{app}")
    assert output.needs_app_name("s3a://b/{app}") and not output.needs_app_name("s3a://b/x")


def test_a_holder_is_alive_until_its_heartbeat_stops_or_its_process_is_gone():
    now = time.time()
    here = socket.gethostname()
    alive = output.Holder("r", here, os.getppid(), "t", now - 1)  # a live process here
    assert alive.alive(now)
    assert not alive.alive(now + output.LEASE_TTL_S + 1)  # stopped beating
    gone = output.Holder("r", here, 2**22 + 7, "t", now)  # no such pid here
    assert not gone.alive(now)
    earlier_self = output.Holder("r", here, os.getpid(), "t", now)  # a restarted container
    assert not earlier_self.alive(now)
    elsewhere = output.Holder("r", "another-host", 2**22 + 7, "t", now)
    assert elsewhere.alive(now)  # another host's pid
    assert output.Holder.parse(b"{not json") is None
    assert output.Holder.parse(alive.to_json()) == alive
