"""Fixtures that run our rmq-namesrv / rmq-broker as subprocesses for the
interoperability tests (driven by the Apache RocketMQ C++ client bundled in
PyPI `rocketmq` 0.4.4).

* Binaries: $RMQ_BIN_DIR, default <repo>/target/release.
* Ports are chosen at run time (namesrv: listenPort=0, the printed port is
  used; broker: a P with P-2, P and P+1 all free). 9876/10911 are never
  assumed.
* Every wait is bounded; every process is stopped in teardown (SIGTERM, then
  SIGKILL after a bound), even when the test fails. Children also get
  PR_SET_PDEATHSIG(SIGKILL) so a killed pytest does not leak them.
* stdout+stderr of each process go to a log file under the test's tmp dir;
  on failure the tails are attached to the report.
"""

import contextlib
import ctypes
import os
import random
import re
import signal
import socket
import subprocess
import time

import pytest

import remoting

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("RMQ_BIN_DIR") or os.path.join(REPO, "target", "release")

READY_TIMEOUT = float(os.environ.get("RMQ_READY_TIMEOUT", "20"))
STOP_TIMEOUT = float(os.environ.get("RMQ_STOP_TIMEOUT", "10"))
ROUTE_TIMEOUT = float(os.environ.get("RMQ_ROUTE_TIMEOUT", "40"))

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


# --------------------------------------------------------------------------
# ports


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
            return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def port_free(port, reuse=False):
    """True if we can bind 0.0.0.0:port (which also rules out a listener on
    127.0.0.1:port). With reuse=False TIME_WAIT leftovers count as busy."""
    if port <= 0 or port > 65535:
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_broker_port(attempts=500):
    """A main port P such that P-2 (fast/VIP port), P and P+1 (HA) are free.
    Chosen below the ephemeral range so client sockets do not grab them."""
    lo_eph, _ = _ephemeral_range()
    hi = min(lo_eph - 2, 32000)
    lo = 15000 if hi > 16000 else 2000
    for _ in range(attempts):
        p = random.randrange(lo + 2, hi)
        if all(port_free(x) for x in (p - 2, p, p + 1)):
            return p
    raise RuntimeError("could not find three free ports P-2, P, P+1")


# --------------------------------------------------------------------------
# processes


def _pdeathsig():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ManagedProcess(object):
    """A subprocess whose stdout+stderr are appended to a log file."""

    def __init__(self, name, argv, log_path, cwd=None, env=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.proc = None
        self.starts = 0
        self._log_offset = 0

    def start(self, ready_substrings, timeout=READY_TIMEOUT):
        assert self.proc is None or self.proc.poll() is not None, "%s already running" % self.name
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(self.argv))).encode())
            self._log_offset = f.tell()
            self.proc = subprocess.Popen(
                self.argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.cwd, env=self.env, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + timeout
        while True:
            text = self.output_since_start()
            if all(s in text for s in ready_substrings):
                return text
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("%s exited with status %s before it was ready; output:\n%s"
                                     % (self.name, rc, self.tail()))
            if time.monotonic() > deadline:
                raise AssertionError("%s not ready within %.0fs (waiting for %r); output:\n%s"
                                     % (self.name, timeout, ready_substrings, self.tail()))
            time.sleep(0.05)

    def output_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, max_lines=200):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-max_lines:])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns (exit status,
        clean) where clean means it exited by itself after SIGTERM."""
        if self.proc is None:
            return None, True
        if self.proc.poll() is not None:
            return self.proc.returncode, True
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=timeout), True
        except subprocess.TimeoutExpired:
            self._append_log("===== %s did not stop within %.0fs of SIGTERM; sending SIGKILL\n"
                             % (self.name, timeout))
            self.proc.kill()
            return self.proc.wait(timeout=10), False

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self._append_log("===== kill -9 %s (pid %d)\n" % (self.name, self.proc.pid))
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _append_log(self, text):
        try:
            with open(self.log_path, "ab") as f:
                f.write(text.encode())
        except OSError:
            pass


def _binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        pytest.fail("binary %s not found (RMQ_BIN_DIR=%s); build with `cargo build --release --bins`"
                    % (path, BIN_DIR), pytrace=False)
    return path


class Cluster(object):
    """One rmq-namesrv and one rmq-broker (master) on run-time ports."""

    def __init__(self, workdir, broker_overrides=None, name="c"):
        self.workdir = str(workdir)
        self.name = name
        os.makedirs(self.workdir, exist_ok=True)
        self.store_dir = os.path.join(self.workdir, "store")
        self.namesrv = None
        self.broker = None
        self.namesrv_addr = None
        self.broker_port = None
        self.broker_addr = None
        self.broker_props = {
            "brokerIP1": "127.0.0.1",
            "brokerName": "broker-%s" % name,
            "brokerClusterName": "DefaultCluster",
            "storePathRootDir": self.store_dir,
            "flushDiskType": "ASYNC_FLUSH",
            "autoCreateTopicEnable": "true",
            "mappedFileSizeCommitLog": str(64 * 1024 * 1024),
        }
        self.broker_props.update({k: str(v) for k, v in (broker_overrides or {}).items()})

    # -- namesrv
    def start_namesrv(self):
        argv = [_binary("rmq-namesrv"), "listenPort=0", "listenAddr=127.0.0.1",
                "kvConfigPath=%s" % os.path.join(self.workdir, "namesrv", "kvConfig.json")]
        self.namesrv = ManagedProcess("rmq-namesrv", argv, os.path.join(self.workdir, "namesrv.log"),
                                      cwd=self.workdir)
        out = self.namesrv.start(["listening on 127.0.0.1:"])
        m = LISTEN_RE.search(out)
        assert m, "rmq-namesrv printed no 'listening on 127.0.0.1:PORT' line:\n" + out
        self.namesrv_addr = "127.0.0.1:%s" % m.group(1)

    # -- broker
    def _broker_argv(self):
        props = dict(self.broker_props)
        props["listenPort"] = str(self.broker_port)
        argv = [_binary("rmq-broker"), "-n", self.namesrv_addr]
        argv += ["%s=%s" % kv for kv in sorted(props.items())]
        return argv

    def start_broker(self, wait_route=True):
        if self.broker_port is None:
            self.broker_port = pick_broker_port()
            self.broker_addr = "127.0.0.1:%d" % self.broker_port
        else:
            # Restart on the same port: wait (bounded) until the old sockets are gone.
            deadline = time.monotonic() + 15
            while not all(port_free(p, reuse=True) for p in
                          (self.broker_port - 2, self.broker_port, self.broker_port + 1)):
                if time.monotonic() > deadline:
                    raise AssertionError("broker ports %d-2/+1 still busy 15s after stop" % self.broker_port)
                time.sleep(0.1)
        if self.broker is None:
            self.broker = ManagedProcess("rmq-broker", self._broker_argv(),
                                         os.path.join(self.workdir, "broker.log"), cwd=self.workdir)
        else:
            self.broker.argv = self._broker_argv()
        t0 = time.monotonic()
        out = self.broker.start(["rmq-broker ready", "listening on 127.0.0.1:"])
        ports = [int(p) for p in LISTEN_RE.findall(out)]
        assert self.broker_port in ports, (
            "rmq-broker was asked for listenPort=%d but printed %r" % (self.broker_port, ports))
        self.broker_ready_seconds = time.monotonic() - t0
        if wait_route:
            # Clients resolve new topics through TBW102's route; wait until the
            # broker has registered with our name server.
            remoting.wait_for_route(self.namesrv_addr, "TBW102", deadline_s=ROUTE_TIMEOUT)
        return out

    def stop_broker(self):
        if self.broker is None:
            return None, True
        return self.broker.stop()

    def kill9_broker(self):
        if self.broker is not None:
            self.broker.kill9()

    def restart_broker(self, kill9=False, **overrides):
        """Stop (SIGTERM, or kill -9) and start again on the same store and
        port. Returns (exit status, stopped cleanly)."""
        if kill9:
            self.kill9_broker()
            status = (-9, False)
        else:
            status = self.stop_broker()
        self.broker_props.update({k: str(v) for k, v in overrides.items()})
        self.start_broker()
        return status

    def start(self):
        self.start_namesrv()
        self.start_broker()
        return self

    def stop(self):
        results = []
        for p in (self.broker, self.namesrv):
            if p is not None:
                try:
                    results.append((p.name,) + tuple(p.stop()))
                except Exception as e:  # never let teardown hide the real failure
                    results.append((p.name, repr(e), False))
        return results

    def logs(self):
        out = []
        for p in (self.namesrv, self.broker):
            if p is not None:
                out.append(("%s log (%s)" % (p.name, p.log_path), p.tail()))
        return out


class Layout(object):
    """Name servers and brokers of one conf/<layout>; all stopped at teardown."""

    def __init__(self, workdir, layout):
        self.workdir = str(workdir)
        self.layout = layout
        self.procs = []
        self.namesrvs = []
        self.brokers = {}

    def start_namesrv(self, name):
        argv = [_binary("rmq-namesrv"), "listenPort=0", "listenAddr=127.0.0.1",
                "kvConfigPath=%s" % os.path.join(self.workdir, name, "kv.json")]
        p = ManagedProcess(name, argv, os.path.join(self.workdir, name + ".log"), cwd=self.workdir)
        self.procs.append(p)
        out = p.start(["listening on 127.0.0.1:"])
        addr = "127.0.0.1:%s" % LISTEN_RE.search(out).group(1)
        self.namesrvs.append((p, addr))
        return addr

    def namesrv_addr(self):
        return ";".join(a for _, a in self.namesrvs)

    def start_broker(self, name):
        port = pick_broker_port()
        conf = os.path.join(REPO, "conf", self.layout, name + ".properties")
        argv = [_binary("rmq-broker"), "-c", conf, "-n", self.namesrv_addr(),
                "listenPort=%d" % port,
                "storePathRootDir=%s" % os.path.join(self.workdir, name),
                "mappedFileSizeCommitLog=%d" % (64 * 1024 * 1024)]
        p = ManagedProcess(name, argv, os.path.join(self.workdir, name + ".log"), cwd=self.workdir)
        self.procs.append(p)
        p.start(["rmq-broker ready", "listening on 127.0.0.1:%d" % port])
        self.brokers[name] = (p, "127.0.0.1:%d" % port)
        return "127.0.0.1:%d" % port

    def store_dir(self, name):
        return os.path.join(self.workdir, name)

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # never hide the test's own failure
                print("stopping %s: %r" % (p.name, e))

    def logs(self):
        return [("%s log (%s)" % (p.name, p.log_path), p.tail()) for p in self.procs]


@contextlib.contextmanager
def running_layout(request, tmp_path, layout, brokers=()):
    """conf/<layout> with name servers namesrv-1 and namesrv-2, then
    `brokers` started in that order; all stopped on exit, and their logs
    attached to the report when the test fails."""
    lay = Layout(tmp_path, layout)
    request.node._rmq_clusters = [lay]
    try:
        lay.start_namesrv("namesrv-1")
        lay.start_namesrv("namesrv-2")
        for name in brokers:
            lay.start_broker(name)
        yield lay
    finally:
        lay.stop()


# --------------------------------------------------------------------------
# fixtures


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and rep.when in ("setup", "call"):
        for c in getattr(item, "_rmq_clusters", []):
            for title, text in c.logs():
                rep.sections.append((title, text))


@pytest.fixture
def cluster_factory(request, tmp_path):
    """make(**broker_overrides) -> started Cluster; all are stopped at teardown."""
    clusters = []
    request.node._rmq_clusters = clusters

    def make(name=None, **broker_overrides):
        c = Cluster(tmp_path / ("cluster%d" % len(clusters)), broker_overrides,
                    name=name or "%d" % len(clusters))
        clusters.append(c)
        c.start()
        return c

    yield make
    for c in clusters:
        results = c.stop()
        for name, status, clean in results:
            if not clean:
                print("WARNING: %s had to be SIGKILLed at teardown (status %s)" % (name, status))


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory()


@pytest.fixture
def clients():
    """Registry of C++ client objects; shuts them all down at teardown
    (consumers first), even if the test forgot to or failed."""
    import helpers
    reg = helpers.ClientRegistry()
    yield reg
    reg.shutdown_all()
