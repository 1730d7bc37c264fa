"""The daemon (``cgwatch run``): :mod:`.service` owns the loop and the
lifecycle, :mod:`.pipeline` the rules, models and alert state, :mod:`.view`
what the web side reads (fed from the pipeline's output), :mod:`.sdnotify`
and :mod:`.logs` the ways it talks to systemd."""

from .service import Daemon, run

__all__ = ["Daemon", "run"]
