"""Ctrl-C during training stops at a consistent point instead of wherever it lands.

A ``KeyboardInterrupt`` raised in the middle of a growth event would leave a layer whose
weights, optimizer state and growth records disagree. While a net trains, the first SIGINT
only asks it to stop (``GrowingNet.stop_request_``): the optimizer step that is running,
and any growth in it, complete first. A second SIGINT raises ``KeyboardInterrupt`` at once,
for a user who wants out whatever the state.
"""

import signal
import threading
from contextlib import contextmanager


@contextmanager
def deferred_interrupt(net):
    """Within the block, SIGINT sets ``net.stop_request_ = "interrupted"`` once.

    Only in the main thread, and only where SIGINT has Python's default handler (a
    handler the user installed is left alone); elsewhere the block changes nothing.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def request_stop(signum, frame):
        if getattr(net, "stop_request_", None) == "interrupted":
            raise KeyboardInterrupt
        net.stop_request_ = "interrupted"

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
