"""pgtaskq: a PostgreSQL-native background job queue for synchronous Python web stacks."""

from pgtaskq._version import __version__ as __version__
from pgtaskq.context import JobContext as JobContext
from pgtaskq.context import current_job as current_job
from pgtaskq.errors import Cancelled as Cancelled
from pgtaskq.errors import ConfigurationError as ConfigurationError
from pgtaskq.errors import DatabaseUnavailableError as DatabaseUnavailableError
from pgtaskq.errors import FinalFailure as FinalFailure
from pgtaskq.errors import JobNotFoundError as JobNotFoundError
from pgtaskq.errors import PgtaskqError as PgtaskqError
from pgtaskq.errors import ProcessDied as ProcessDied
from pgtaskq.errors import Retry as Retry
from pgtaskq.errors import SchemaNotInstalledError as SchemaNotInstalledError
from pgtaskq.errors import SchemaVersionError as SchemaVersionError
from pgtaskq.job import Job as Job
from pgtaskq.queue import TaskQueue as TaskQueue
from pgtaskq.task import Task as Task


def __getattr__(name: str) -> object:
    # The worker pulls in threads and signal handling; web processes that only enqueue
    # should not pay for importing it.
    if name == "Worker":
        from pgtaskq.worker import Worker

        return Worker
    raise AttributeError(f"module 'pgtaskq' has no attribute {name!r}")
