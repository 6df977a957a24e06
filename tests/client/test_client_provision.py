"""`corral provision FILE.yaml` against a real daemon: pull, alias, prune, idempotence, failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corral.client.cli import main
from corral.client.provision import canonical
from serving import Daemon
from tiny import write_tiny_llama

Invoke = Callable[..., Result]


@pytest.fixture
def corral(daemon: Daemon) -> Invoke:
    env = {"CORRAL_SOCKET": str(daemon.socket_path), "CORRAL_HOME": str(daemon.home)}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, "CORRAL_HOST": None})

    return invoke


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioning folder with two model files beside the YAML."""
    path = tmp_path_factory.mktemp("provision")
    (path / "models").mkdir()
    write_tiny_llama(path / "models" / "alpha.gguf", seed=1)
    write_tiny_llama(path / "models" / "beta.gguf", seed=2)
    return path


def names(daemon: Daemon) -> dict[str, str]:
    return {m.name: m.digest for m in daemon.client.list().models}


def write(folder: Path, text: str) -> str:
    path = folder / "machine.yaml"
    path.write_text(text)
    return str(path)


SPEC = """
models:
  - name: alpha
    from: ./models/alpha.gguf
  - name: team/beta:v2
    from: models/beta.gguf
aliases:
  assistant: alpha
prune: true
"""


def test_provision_brings_the_machine_to_the_file_and_is_idempotent(
    corral: Invoke, daemon: Daemon, folder: Path, tiny_gguf: Path
) -> None:
    daemon.client.pull(str(tiny_gguf), stream=False)  # installed but not listed: pruned
    spec = write(folder, SPEC)

    planned = corral("provision", "--dry-run", spec)
    assert planned.exit_code == 0, planned.output
    assert "to pull   alpha:latest (from " in planned.stdout
    assert "to remove tiny:latest" in planned.stdout
    assert set(names(daemon)) == {"tiny:latest"}  # nothing changed

    first = corral("provision", spec)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert f"pulled    alpha:latest (from {folder / 'models' / 'alpha.gguf'})" in lines
    assert "copied    assistant:latest (= alpha:latest)" in lines
    assert "removed   tiny:latest" in lines
    assert lines[-1] == "provision done: 2 pulled, 1 copied, 1 removed"
    installed = names(daemon)
    assert set(installed) == {"alpha:latest", "team/beta:v2", "assistant:latest"}
    assert installed["assistant:latest"] == installed["alpha:latest"]
    assert "alpha:latest" in first.stdout and "beta:latest" not in installed  # no leftovers
    assert "installed as" not in first.output  # the file's own name is not what it gets

    again = corral("provision", spec)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == "provision done: 3 present"
    assert names(daemon) == installed


def test_a_failing_step_is_reported_the_rest_done_and_the_exit_is_1(
    corral: Invoke, daemon: Daemon, folder: Path
) -> None:
    daemon.client.pull(str(folder / "models" / "alpha.gguf"), stream=False)  # alpha:latest
    spec = write(
        folder,
        "models:\n  - alpha\n  - name: ghost\n    from: ./models/missing.gguf\n"
        "aliases:\n  spook: ghost\n  helper: alpha\n",
    )
    result = corral("provision", spec)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "present   alpha:latest" in lines
    assert any(line.startswith("failed    ghost:latest: file ") for line in lines)
    assert "failed    spook:latest: its model ghost:latest is not installed" in lines
    assert "copied    helper:latest (= alpha:latest)" in lines  # the other steps still ran
    assert lines[-1] == "provision failed: 1 present, 2 failed, 1 copied"
    assert "ghost:latest" not in names(daemon)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [\n", "is not valid YAML"),
        ("- alpha\n", "expected a mapping with 'models'"),
        ("modles: [alpha]\n", "modles: unknown key; use aliases, models, prune"),
        ("models: alpha\n", "models: must be a list"),
        ("models: [{name: a, form: x}]\n", "models[0]: unknown key 'form'; use name and from"),
        ("models: [{from: x.gguf}]\n", "models[0]: 'name' must be a model name"),
        ("models: [7]\n", "models[0]: must be a model name or a mapping"),
        ("models: []\naliases: [a]\n", "aliases: must map alias names to model names"),
        ("models: []\nprune: yes please\n", "prune: must be true or false"),
        ("models: [a, {name: A, from: x.gguf}]\n", "models[1]: a:latest is already declared"),
        ("models: [a]\naliases: {a: b}\n", "aliases: a:latest: the name is already declared"),
        ("aliases: {x: a, X:latest: b}\n", "aliases: x:latest: the name is already declared by"),
    ],
)
def test_a_bad_file_is_one_line_and_changes_nothing(
    corral: Invoke, daemon: Daemon, folder: Path, text: str, message: str
) -> None:
    before = names(daemon)
    spec = write(folder, text)
    result = corral("provision", spec)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {spec}") and message in line
    assert names(daemon) == before


def test_a_missing_file_is_one_line(corral: Invoke, folder: Path) -> None:
    result = corral("provision", str(folder / "none.yaml"))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == f"Error: cannot read {folder / 'none.yaml'}: No such file or directory"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Alpha", "alpha:latest"),
        ("alpha:v1", "alpha:v1"),
        ("library/alpha", "alpha:latest"),
        ("registry.corral.local/library/alpha:x", "alpha:x"),
        ("team/beta", "team/beta:latest"),
        ("host:5000/team/beta", "host:5000/team/beta:latest"),
    ],
)
def test_names_are_compared_as_the_daemon_lists_them(name: str, expected: str) -> None:
    assert canonical(name) == expected


def test_a_name_the_daemon_refuses_fails_before_anything_is_pulled(
    corral: Invoke, daemon: Daemon, folder: Path
) -> None:
    before = names(daemon)
    spec = write(folder, "models:\n  - name: ../evil\n    from: ./models/beta.gguf\n")
    result = corral("provision", spec)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("failed    ../evil:latest: ")
    assert names(daemon) == before  # nothing pulled, not even under the file's own name


def test_update_pulls_installed_models_again_and_says_what_changed(
    corral: Invoke, daemon: Daemon, folder: Path, tmp_path: Path
) -> None:
    model = tmp_path / "gamma.gguf"
    write_tiny_llama(model, seed=3)
    spec = write(folder, f"models:\n  - name: gamma\n    from: {model}\n")
    assert corral("provision", spec).exit_code == 0
    digest = names(daemon)["gamma:latest"]
    same = corral("provision", "--update", spec)
    assert same.exit_code == 0 and "present   gamma:latest (up to date)" in same.stdout
    write_tiny_llama(model, seed=4)  # the file it comes from changed
    assert "to update gamma:latest" in corral("provision", "--update", "--dry-run", spec).stdout
    changed = corral("provision", "--update", spec)
    assert changed.exit_code == 0 and "updated   gamma:latest (from " in changed.stdout
    assert names(daemon)["gamma:latest"] != digest
