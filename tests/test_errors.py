"""The error surface: every exception stamped ``pgtaskq`` is ``pgtaskq.X`` and pickles."""

from __future__ import annotations

import inspect
import pickle

import pytest
from click.testing import CliRunner

import pgtaskq
from pgtaskq import errors

STAMPED = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
           if issubclass(cls, BaseException) and cls.__module__ == "pgtaskq"]


def test_every_exception_class_is_stamped():
    defined = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, BaseException) and cls.__qualname__ in vars(errors)]
    assert defined and set(defined) == set(STAMPED)


@pytest.mark.parametrize("cls", STAMPED, ids=lambda cls: cls.__name__)
def test_exported_as_pgtaskq_x(cls):
    assert getattr(pgtaskq, cls.__name__) is cls


@pytest.mark.parametrize("cls", STAMPED, ids=lambda cls: cls.__name__)
def test_pickles(cls):
    exc = cls("something went wrong") if cls is not errors.Retry else cls(30, "busy")
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is cls and str(copy) == str(exc)


def test_retry_keeps_its_delay_through_pickle():
    copy = pickle.loads(pickle.dumps(pgtaskq.Retry(delay=12.5)))
    assert copy.delay == 12.5 and copy.reason is None
    assert str(copy) == "retry requested in 12.5s"


def test_a_negative_retry_delay_is_a_configuration_error():
    with pytest.raises(pgtaskq.ConfigurationError, match="delay"):
        pgtaskq.Retry(delay=-1)


def test_show_of_an_unknown_job_raises_job_not_found(tq):
    from pgtaskq.cli import cli

    result = CliRunner().invoke(cli, ["--dsn", tq.dsn, "--schema", tq.schema, "show", "4242"],
                                standalone_mode=False)
    assert isinstance(result.exception.__cause__, pgtaskq.JobNotFoundError)
