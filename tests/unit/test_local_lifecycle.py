"""Pure pieces of the local kubelet: restart back-off, termination timing, port env/args, pod addresses, probes."""

import http.server
import queue
import socket
import threading

import pytest

from shipyard.runtime.local.lifecycle import Backoff, kill_after_sigterm, prestop_seconds, should_restart
from shipyard.runtime.local.network import PodAddress, resolve_argv, resolve_env
from shipyard.runtime.local.probes import Prober, Timing, http_get, readiness_check, tcp_socket
from shipyard.runtime.pods import is_ready, pod_address
from tests.conftest import wait_for


def test_backoff_doubles_to_the_cap_and_resets_after_a_long_run():
    b = Backoff(initial=1, cap=30, reset_after=60)
    delays, previous = [], None
    for _ in range(7):
        previous = b.next_delay(previous, ran_for=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert b.next_delay(30, ran_for=61) == 1


@pytest.mark.parametrize("policy,code,expected", [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 1, False), (None, 0, True),  # the API server's default is Always
])
def test_restart_policy(policy, code, expected):
    spec = {"containers": [{"name": "c"}]}
    if policy:
        spec["restartPolicy"] = policy
    assert should_restart({"spec": spec}, code) is expected


def _pod(prestop=None, grace=None):
    container = {"name": "c"}
    if prestop is not None:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": prestop}}}
    spec = {"containers": [container]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"spec": spec}


@pytest.mark.parametrize("prestop,grace,expected", [
    (None, None, (0, 30)),   # SIGTERM at once, 30 s to finish
    (5, 30, (5, 25)),        # the grace period includes the preStop time
    (40, 30, (30, 2)),       # a preStop longer than the grace is cut, with a 2 s grace after SIGTERM
    (None, 1, (0, 2)),       # the kubelet's minimum shutdown window
])
def test_termination_timing(prestop, grace, expected):
    pod = _pod(prestop, grace)
    assert (prestop_seconds(pod), kill_after_sigterm(pod)) == expected


def _serving_pod(env=(), ports=({"name": "metrics", "containerPort": 9000}, {"name": "http", "containerPort": 8000})):
    container = {"name": "c", "env": list(env), "ports": list(ports)}
    pod = {"metadata": {"name": "web-abc", "namespace": "default"}, "spec": {"containers": [container]},
           "status": {"podIP": "127.0.0.1", "hostPorts": {"8000": 41000, "9000": 41001}}}
    return pod, container


def test_port_env_defaults_to_the_http_ports_host_port():
    pod, container = _serving_pod()
    me = PodAddress("default", "web-abc", None, {8000: 41000, 9000: 41001})
    assert resolve_env(pod, container, me, [], set())["PORT"] == "41000"
    pod, container = _serving_pod(env=[{"name": "PORT", "value": "8000"}])
    assert resolve_env(pod, container, me, [], set())["PORT"] == "41000"
    pod, container = _serving_pod(env=[{"name": "PORT", "value": "1234"}])  # not a containerPort: left alone
    assert resolve_env(pod, container, me, [], set())["PORT"] == "1234"


def test_args_expand_env_and_port_flags_naming_a_container_port():
    argv = ["serve", "--port", "$(PORT)", "--metrics-port=9000", "--server.port", "8000", "--max-tokens", "8000",
            "$(UNKNOWN)", "$$(PORT)"]
    assert resolve_argv(argv, {"PORT": "41000"}, {8000: 41000, 9000: 41001}) == [
        "serve", "--port", "41000", "--metrics-port=41001", "--server.port", "41000", "--max-tokens", "8000",
        "$(UNKNOWN)", "$(PORT)"]


def test_servers_told_to_listen_everywhere_listen_on_loopback_only():
    argv = ["serve", "--host", "0.0.0.0", "--ServerApp.ip=0.0.0.0", "--bind-addr=0.0.0.0:$(PORT)", "10.0.0.0",
            "--note=0.0.0.0.0"]
    assert resolve_argv(argv, {"PORT": "41000"}, {}) == [
        "serve", "--host", "127.0.0.1", "--ServerApp.ip=127.0.0.1", "--bind-addr=127.0.0.1:41000", "10.0.0.0",
        "--note=0.0.0.0.0"]


def test_pod_address_reads_host_ports_locally_and_container_ports_on_a_cluster():
    pod, _ = _serving_pod()
    assert pod_address(pod) == ("127.0.0.1", 41000)
    assert pod_address(pod, "metrics") == ("127.0.0.1", 41001)
    assert pod_address(pod, 9000) == ("127.0.0.1", 41001)
    assert pod_address(pod, "nope") is None
    cluster = {**pod, "status": {"podIP": "10.0.0.7"}}
    assert pod_address(cluster) == ("10.0.0.7", 8000)
    assert pod_address({**pod, "status": {}}) is None


def test_is_ready_needs_the_ready_condition_and_no_deletion():
    pod, _ = _serving_pod()
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert is_ready(pod)
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00+00:00"
    assert not is_ready(pod)


def test_probe_timing_defaults_are_kubernetes():
    assert Timing.of({}) == Timing(0.0, 10.0, 1.0, 1, 3)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        code = {"/ok": 200, "/moved": 302, "/sick": 503}.get(self.path, 404)
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_port():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_probe_succeeds_on_2xx_and_3xx_only(http_port):
    assert http_get(http_port, "/ok", 1.0)
    assert http_get(http_port, "/moved", 1.0)
    assert not http_get(http_port, "/sick", 1.0)


def test_probes_fail_on_a_closed_port_and_time_out_on_a_silent_one():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not tcp_socket(port, 0.5) and not http_get(port, "/", 0.5)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert tcp_socket(silent.getsockname()[1], 0.5)
        assert not http_get(silent.getsockname()[1], "/", 0.2)


def test_readiness_check_resolves_named_ports_to_host_ports(http_port):
    pod, container = _serving_pod()
    pod["status"]["hostPorts"]["8000"] = http_port
    container["readinessProbe"] = {"httpGet": {"path": "/ok", "port": "http"}}
    check = readiness_check(pod, container, lambda: ({}, None))
    assert check is not None and check()
    container["readinessProbe"] = {"tcpSocket": {"port": "nope"}}
    with pytest.raises(ValueError, match="not a declared containerPort"):
        readiness_check(pod, container, lambda: ({}, None))
    del container["readinessProbe"]
    assert readiness_check(pod, container, lambda: ({}, None)) is None



def test_prober_runs_probes_off_the_caller_thread_and_applies_thresholds():
    outcomes, started, wakes = queue.Queue(), [], []

    def check():
        started.append(1)
        return outcomes.get(timeout=10)  # blocks like a slow probe until the test answers it

    prober = Prober(lambda: wakes.append(1), workers=1)
    timing = Timing(initial_delay=0, period=0, timeout=1, success_threshold=2, failure_threshold=2)

    def observe():
        return prober.observe("pod", timing, lambda: check, 0.0)

    def step(ok):
        """Answer the probe in flight; once the next one has started, this answer has been applied."""
        count = len(started)
        outcomes.put(ok)
        # Polling observe() is what schedules the next probe (period 0), as the sync loop's ticks do.
        wait_for(lambda: [observe()] and len(started) == count + 1, message="next probe")
        return observe()

    try:
        assert observe() is None  # returns at once: the probe blocks on another thread
        wait_for(lambda: started, message="first probe")
        assert [step(True), step(True), step(False), step(False)] == [None, True, True, False]
        wait_for(lambda: len(wakes) == 2, message="a wake-up per change of verdict")
    finally:
        outcomes.put(False)
        prober.close()


def test_registered_service_urls_are_rewritten_to_their_local_address():
    from shipyard.runtime.local.network import rewrite_service_urls

    urls = {"http://shipyard-gateway.shipyard-system.svc": "http://127.0.0.1:41234"}
    assert rewrite_service_urls("http://shipyard-gateway.shipyard-system.svc/default/chat/v1", urls) == \
        "http://127.0.0.1:41234/default/chat/v1"
    assert rewrite_service_urls("http://shipyard-gateway.shipyard-system.svc", urls) == "http://127.0.0.1:41234"
    # Only whole host names: a longer name that merely starts the same way is someone else's.
    assert rewrite_service_urls("http://shipyard-gateway.shipyard-system.svc.example.com/x", urls) == \
        "http://shipyard-gateway.shipyard-system.svc.example.com/x"
