"""Where alerts go: journald, webhook (HMAC-signed), Slack, Alertmanager, stdout and JSON Lines files.

Each sink type lives in its own module with its typed config (unknown keys
rejected); :data:`~cgwatch.sinks.base.SINKS` names them all. A sink turns
one group of notifications into one request and classifies the answer
(:mod:`cgwatch.sinks.retry`); the delivery loop in ``alerts/`` retries.
"""

from .base import SINKS, BaseSink, SinkConfig, build_sinks, notify_test, sink_class

__all__ = ["SINKS", "BaseSink", "SinkConfig", "build_sinks", "notify_test", "sink_class"]
