"""Bad manifests are refused with one line naming the source, the document and the field path."""

import pytest

from shipyard.resources import ManifestError, load_resources, parse_yaml

GOOD = """\
apiVersion: shipyard.dev/v1alpha1
kind: TrainingJob
metadata: {name: ok}
spec: {command: [python, train.py]}
"""


def refuse(text: str | bytes) -> ManifestError:
    with pytest.raises(ManifestError) as err:
        load_resources(parse_yaml(text, "jobs.yaml"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("jobs.yaml: ")
    return err.value


def test_good_manifest_gets_defaults():
    [job] = load_resources(parse_yaml(GOOD, "jobs.yaml"))
    assert job.metadata.namespace == "default"
    assert job.spec.max_restarts == 3
    assert job.spec.replicas == 1


@pytest.mark.parametrize("text, path, words", [
    (GOOD.replace("TrainingJob", "TrainingJobz"), "kind", "not a Shipyard kind"),
    (GOOD.replace("spec: {", "spec: {replicaz: 2, "), "spec.replicaz", "unknown field"),
    (GOOD.replace("{command: [python, train.py]}", "{replicas: 2}"), "spec.command", "required"),
    (GOOD.replace("spec: {", "spec: {replicas: -1, "), "spec.replicas", "greater than or equal to 1"),
    (GOOD.replace("name: ok", "name: Not_Valid"), "metadata.name", "DNS-1123"),
    (GOOD.replace("spec: {", "spec: {resources: {cpu: lots}, "), "spec.resources.cpu", "quantity"),
    (GOOD.replace("spec: {", "spec: {volumes: [{name: d, mountPath: relative}], "), "spec.volumes[0].mountPath",
     "absolute"),
    (GOOD.replace("apiVersion: shipyard.dev/v1alpha1", "apiVersion: batch/v1"), "apiVersion", "not served"),
])
def test_field_errors_name_the_path(text, path, words):
    err = refuse(text)
    assert err.document == 1
    assert err.path == path, str(err)
    assert words in err.message


def test_second_document_is_named():
    err = refuse(GOOD + "---\n" + GOOD.replace("name: ok", "name: two").replace("spec: {", "spec: {bogus: 1, "))
    assert err.document == 2 and err.path == "spec.bogus"


def test_yaml_syntax_error_names_line():
    err = refuse("apiVersion: shipyard.dev/v1alpha1\nkind: [unclosed\n")
    assert "YAML syntax error at line" in err.message


def test_oversize_document_is_refused_without_parsing():
    big = GOOD + "  # " + "x" * (10 * 1024 * 1024) + "\n"
    err = refuse(big)
    assert "MB" in err.message


def test_alias_bomb_is_refused():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    err = refuse("\n".join(lines) + "\n")
    assert "alias bomb" in err.message


def test_duplicate_object_in_one_apply_is_refused():
    err = refuse(GOOD + "---\n" + GOOD)
    assert err.document == 2 and "also defined in document 1" in err.message


def test_non_mapping_document():
    err = refuse("- just\n- a list\n")
    assert "mapping" in err.message


def test_empty_documents_are_skipped():
    assert len(load_resources(parse_yaml("---\n---\n" + GOOD, "jobs.yaml"))) == 1
