"""Endpoint and App specs: defaults a user can see, and one-line refusals that name the field."""

import pytest

from shipyard.resources import App, Endpoint, ManifestError, load_resources, parse_yaml, resolve_kind
from shipyard.resources.endpoint import VLLM_IMAGE
from shipyard.resources.trainingjob import WORKLOADS_IMAGE

ENDPOINT = """\
apiVersion: shipyard.dev/v1alpha1
kind: Endpoint
metadata: {name: chat}
spec: {model: /models/m, volumes: [{name: models, mountPath: /models}]}
"""
APP = """\
apiVersion: shipyard.dev/v1alpha1
kind: App
metadata: {name: ui}
spec: {command: [python, app.py], port: 7860}
"""


def load(text):
    [res] = load_resources(parse_yaml(text, "serve.yaml"))
    return res


def with_spec(text, extra):
    return text.replace("spec: {", "spec: {" + extra + ", ")


def test_endpoint_defaults_are_visible():
    ep = load(ENDPOINT)
    assert isinstance(ep, Endpoint)
    spec = ep.spec
    assert (spec.replicas.min, spec.replicas.max) == (1, 1)
    assert spec.engine == "builtin" and spec.port == 8000 and spec.public is False
    assert spec.served_model_name == "chat" and spec.image == WORKLOADS_IMAGE
    assert spec.readiness_probe.path == "/health" and spec.drain_seconds == 2
    assert spec.autoscaling is None and spec.scale_to_zero is None
    assert ep.status.phase == "Pending" and ep.status.ready_replicas == 0 and ep.status.url is None
    # What the store keeps validates again to the same object (get -o yaml | apply -f - changes nothing).
    assert Endpoint.model_validate(ep.to_wire()) == ep


def test_engine_and_metric_defaults():
    assert load(with_spec(ENDPOINT, "engine: vllm")).spec.image == VLLM_IMAGE
    assert load(with_spec(ENDPOINT, "engine: vllm, image: my/vllm:1")).spec.image == "my/vllm:1"
    assert load(with_spec(ENDPOINT, "autoscaling: {}")).spec.autoscaling.target == 4
    scaling = load(with_spec(ENDPOINT, "autoscaling: {metric: requestsPerSecond, target: 0.5}")).spec.autoscaling
    assert scaling.target == 0.5 and scaling.scale_down_stabilization_seconds == 60


def test_app_defaults():
    app = load(APP)
    assert isinstance(app, App)
    assert app.spec.readiness_probe.path == "/" and app.spec.image == WORKLOADS_IMAGE
    assert App.model_validate(app.to_wire()) == app


@pytest.mark.parametrize("word, kind", [("endpoints", "Endpoint"), ("ep", "Endpoint"), ("Endpoint", "Endpoint"),
                                        ("apps", "App"), ("app", "App")])
def test_kind_names(word, kind):
    assert resolve_kind(word).KIND == kind


@pytest.mark.parametrize("text, path, words", [
    (with_spec(ENDPOINT, "replicas: {min: 3, max: 2}"), "spec.replicas", "min (3) must not be greater than max (2)"),
    (with_spec(ENDPOINT, "replicas: {min: 0, max: 2}"), "spec", "replicas.min: 0 needs scaleToZero"),
    (with_spec(ENDPOINT, "replicas: {mni: 1}"), "spec.replicas.mni", "unknown field"),
    (with_spec(ENDPOINT, "engine: custom"), "spec", "command: required when engine is custom"),
    (with_spec(ENDPOINT, "command: [serve]"), "spec", "command: only allowed when engine is custom"),
    (with_spec(ENDPOINT, "engine: custom, command: [serve], maxModelLen: 512"), "spec", "maxModelLen:"),
    (with_spec(ENDPOINT, "engine: tgi"), "spec.engine", "'builtin', 'vllm' or 'custom'"),
    (with_spec(ENDPOINT, "ingress: {host: chat.example.com}"), "spec", "ingress: only allowed with public: true"),
    (with_spec(ENDPOINT, "public: true, ingress: {host: Not A Host}"), "spec.ingress.host", "DNS name"),
    (with_spec(ENDPOINT, "port: 0"), "spec.port", "greater than or equal to 1"),
    (with_spec(ENDPOINT, "autoscaling: {metric: requestsPerSecond}"), "spec.autoscaling",
     "target: required when metric is requestsPerSecond"),
    (with_spec(ENDPOINT, "autoscaling: {target: 0}"), "spec.autoscaling.target", "greater than 0"),
    (with_spec(ENDPOINT, "scaleToZero: {idleSeconds: 0}"), "spec.scaleToZero.idleSeconds",
     "greater than or equal to 1"),
    (with_spec(ENDPOINT, "readinessProbe: {path: health}"), "spec.readinessProbe.path", "start with '/'"),
    (with_spec(ENDPOINT, "env: [{name: PORT, value: '9000'}]"), "spec", "env: PORT is set by Shipyard"),
    (with_spec(ENDPOINT, "drainSeconds: 30"), "spec",
     "drainSeconds (30) must be less than terminationGracePeriodSeconds"),
    (ENDPOINT.replace("model: /models/m", "model: /data/m"), "spec", "model: '/data/m' is not inside any volume"),
    (ENDPOINT.replace("model: /models/m", "model: m"), "spec", "model: 'm' must be an absolute path"),
    (ENDPOINT.replace("model: /models/m, ", ""), "spec.model", "required"),
    (ENDPOINT.replace("name: chat", "name: 1chat"), "", "metadata.name: an Endpoint name must start with a letter"),
    (APP.replace(", port: 7860", ""), "spec.port", "required"),
    (APP.replace("port: 7860", "port: 70000"), "spec.port", "less than or equal to 65535"),
    (APP.replace("command: [python, app.py], ", ""), "spec.command", "required"),
    (APP.replace("command: [python, app.py]", "command: []"), "spec.command", "at least 1 item"),
])
def test_refusals_name_the_field(text, path, words):
    with pytest.raises(ManifestError) as err:
        load(text)
    message = str(err.value)
    assert "\n" not in message and message.startswith("serve.yaml: document 1: ")
    assert err.value.path == path, message
    assert words in err.value.message, message
