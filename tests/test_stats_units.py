"""Pure pieces of the operations features: latency buckets, durations, sparklines."""

from __future__ import annotations

import random

import pytest

from pgtaskq import duration, histogram
from pgtaskq.cli.stats import sparkline
from pgtaskq.operations.stats import error_summary
from pgtaskq.sql import migrations


def test_buckets_are_monotonic_and_bounded():
    values = [0, 0.01, 0.0625, 0.07, 0.5, 1, 1.01, 3, 10, 99, 1e3, 6e4, 3.6e6, 1e12]
    buckets = [histogram.bucket(v) for v in values]
    assert buckets == sorted(buckets)
    assert buckets[0] == 0 and buckets[-1] == histogram.BUCKETS - 1
    assert histogram.bucket(1.0) == 8 and histogram.upper(8) == 1.0
    for v in values[2:-1]:
        i = histogram.bucket(v)
        assert histogram.upper(i - 1) < v <= histogram.upper(i)
    assert histogram.bucket(float("nan")) == 0


def test_schema_aggregate_has_as_many_buckets_as_python():
    assert f"ARRAY[{histogram.BUCKETS}]" in migrations.V1
    assert f"least(greatest(bucket, 0), {histogram.BUCKETS - 1})" in migrations.V1


def test_percentiles_are_within_the_bucket_resolution():
    rng = random.Random(1)
    samples = sorted(rng.lognormvariate(3, 1.2) for _ in range(20000))
    counts = [0] * histogram.BUCKETS
    for s in samples:
        counts[histogram.bucket(s)] += 1
    for q in (0.5, 0.95, 0.99):
        true = samples[int(q * len(samples)) - 1]
        assert abs(histogram.percentile(counts, q) / true - 1) < 0.2
    assert histogram.percentile([0] * 64, 0.5) is None
    assert histogram.merged([[1, 2], None, [0, 0, 3]]) == [1, 2, 3]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("3h", 10800), ("3d", 259200), ("1w", 604800),
    ("1h30m", 5400), ("2.5", 2.5), ("250ms", 0.25), (" 3D ", 259200)])
def test_durations(text, seconds):
    assert duration.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "3x", "h", "-1d", "0", "0s", "1h 30m", "3d1"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        duration.parse(text)


def test_ages_and_latencies_read_well():
    assert [duration.format_age(s) for s in (0.25, 4.2, 42, 185, 7800, 273600)] == \
        ["250ms", "4.2s", "42s", "3m05s", "2h10m", "3d4h"]
    assert duration.format_age(None) == "" and duration.format_ms(None) == ""
    assert [duration.format_ms(ms) for ms in (0.04, 12.4, 3200)] == ["0.0ms", "12ms", "3.2s"]


def test_sparkline():
    assert sparkline([0, 0]) == "  "
    line = sparkline([0, 1, 4, 8])
    assert line[0] == " " and line[-1] == "█" and len(line) == 4
    assert line[1] <= line[2] <= line[3]


def test_error_summary_takes_the_exception_line_of_a_traceback():
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom\n'
    assert error_summary(tb) == "RuntimeError: boom"
    assert error_summary("lease expired: worker 3\nmore") == "lease expired: worker 3"
    assert error_summary(None) == ""


def test_retention_options_are_validated():
    from click.testing import CliRunner

    from pgtaskq import ConfigurationError, TaskQueue, Worker
    from pgtaskq.cli import cli

    with pytest.raises(ConfigurationError, match="keep_failed"):
        Worker(TaskQueue("postgresql://nowhere/x"), keep_failed=0)
    result = CliRunner().invoke(cli, ["--dsn", "postgresql://nowhere/x", "worker", "m:tq",
                                      "--keep-succeeded", "soon"])
    assert result.exit_code == 2 and "invalid duration 'soon'" in result.output
