"""The daemon (``cgwatch run``): :mod:`.service` owns the loop and the
lifecycle, :mod:`.pipeline` the rules, models and alert state,
:mod:`.sdnotify` and :mod:`.logs` the ways it talks to systemd."""

from .service import Daemon, run

__all__ = ["Daemon", "run"]
