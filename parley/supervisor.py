"""``parley serve``'s own process: it runs the server as a child, and sees that the child and
everything the child started end with it.

Why two processes. A supervisor, a container runtime or a test harness stops a server by
signalling its process group, and a shell's Ctrl-C does the same. Ray's GCS, raylet and workers,
and Serve's HAProxy, all started by the server, would share that group: they would all die at
once while the server was still draining, and the server would crash into their absence. So
the server (the *driver*: Ray, Serve, the actors) runs in a session of its own, and this small
process, which holds no Ray, takes the signals:

- first SIGTERM or SIGINT: the driver drains (``parley.server.drive``) and exits 0; so does this;
- a second one, or one while still starting: every process of the instance is killed now;
- this process killed (SIGKILL, the OOM killer): the driver reads end-of-file on its stdin,
  a pipe only this process writes, and kills its whole instance at once;
- the driver killed: this process kills what it left and exits 1.

"The instance" is every process carrying its id (``parley.instance``): whatever started it and
wherever it moved in the process tree, nothing of it outlives the server. This process also
holds the data directory's lock, ends an earlier instance's leftovers, and holds the port while
the driver starts (``parley.startup_listener``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

from runtime import __version__
from runtime.settings import Settings

from .instance import (
    DataDirInUse,
    InstanceLock,
    InstanceRecord,
    PortInUse,
    end_instance,
    free_port_of_leftovers,
)
from .startup_listener import StartupListener

READY_FD_VARIABLE = "PARLEY_READY_FD"  # in the driver's environment: where it writes "ready"
READY_MESSAGE = b"ready\n"
HAND_OVER_SECONDS = 120.0


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run ``parley <argv>`` (the same ``serve`` command line) as the driver; see the module doc."""
    data_dir = Path(settings.data_dir).expanduser()
    record = InstanceRecord.new(settings.host, settings.port, str(data_dir))
    try:
        lock, previous = InstanceLock.acquire(data_dir, record)
    except DataDirInUse as refused:
        print(f"parley serve: {refused}; stop it first, or use another --data-dir", file=sys.stderr)
        return 2
    try:
        if previous is not None and (ended := end_instance(previous.instance_id, previous.session)):
            print(f"Parley: ended {ended} process(es) left by an earlier server on {data_dir}", flush=True)
        listener = None
        if not settings.ray_address:  # on a cluster, the port is the cluster's Serve's
            try:
                if ended := free_port_of_leftovers(settings.host, settings.port):
                    print(f"Parley: ended {ended} process(es) of a dead server on port {settings.port}")
            except PortInUse as refused:
                print(f"parley serve: {refused}", file=sys.stderr)
                return 2
            listener = StartupListener(settings.host, settings.port, __version__)
        return Supervisor(settings, lock, listener, argv).run()
    finally:
        lock.release()


class Supervisor:
    def __init__(
        self, settings: Settings, lock: InstanceLock, listener: StartupListener | None, argv: list[str]
    ) -> None:
        self._settings = settings
        self._lock = lock
        self._listener = listener
        self._argv = argv
        self._signals: list[int] = []
        self._state = "starting"

    def run(self) -> int:
        ready_read, ready_write = os.pipe()
        driver = subprocess.Popen(
            [sys.executable, "-m", "parley", *self._argv],
            env={**os.environ, **self._lock.environment(), READY_FD_VARIABLE: str(ready_write)},
            stdin=subprocess.PIPE,  # never written: its end-of-file tells the driver we are gone
            pass_fds=(ready_write,),
            start_new_session=True,  # out of our process group: a group's signal reaches us only
        )
        os.close(ready_write)
        self._lock.record_driver(driver.pid)
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda received, _frame: self._signals.append(received))
        code: int | None = None
        try:
            code = self._watch(driver, ready_read, wake_read)
            return code
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for fd in (ready_read, wake_read, wake_write):
                os.close(fd)
            if self._listener is not None:
                self._listener.close()
            # A driver that exited 0 drained and shut its Ray down (``parley.server.stop``) and left
            # nothing: the sweep would only read every process's environment to find so. Any other
            # end (killed, crashed, a second signal, an error here) may have left processes.
            left = self._end_instance() if code != 0 else 0
            if left:
                print(f"Parley: ended {left} process(es) the server left behind", flush=True)
            if driver.stdin is not None:
                with contextlib.suppress(OSError):
                    driver.stdin.close()

    def _watch(self, driver: subprocess.Popen[bytes], ready_read: int, wake_read: int) -> int:
        killed = False
        with selectors.DefaultSelector() as selector:
            selector.register(ready_read, selectors.EVENT_READ, "ready")
            selector.register(wake_read, selectors.EVENT_READ, "signal")
            while driver.poll() is None:
                for key, _ in selector.select(timeout=1.0):
                    if key.data == "ready":
                        message = os.read(ready_read, 64)
                        selector.unregister(ready_read)
                        if message == READY_MESSAGE and not self._signals:
                            self._become_ready()
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_read, 64)
                while self._signals:
                    self._signals.pop()
                    if self._state == "ready":
                        self._state = "draining"
                        print("Parley draining (a second signal stops at once)", flush=True)
                        driver.send_signal(signal.SIGTERM)
                    elif not killed:
                        killed = True
                        print("Parley stopping now", flush=True)
                        self._end_instance()
        code = driver.returncode
        if killed or code != 0:
            print(f"Parley: the server exited with {code}", flush=True)
            return 1
        return 0

    def _end_instance(self) -> int:
        return end_instance(self._lock.record.instance_id, self._lock.record.session)

    def _become_ready(self) -> None:
        if self._listener is not None and not self._listener.hand_over(
            HAND_OVER_SECONDS, give_up=lambda: bool(self._signals)
        ):
            if self._signals:
                return  # stopped while starting: the signal ends everything
            print(
                f"Parley: the HTTP front never answered ready ({self._listener.last_probe}); stopping",
                file=sys.stderr,
                flush=True,
            )
            self._signals.append(signal.SIGTERM)  # still starting: ends everything
            return
        self._listener = None
        self._state = "ready"
        settings = self._settings
        print(f"Parley listening on http://{settings.host}:{settings.port} (Ctrl-C to stop)", flush=True)
