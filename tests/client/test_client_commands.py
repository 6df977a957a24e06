"""`corral ps`, `stop`, `cp`, `--keepalive` and `--json` against a real daemon."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corral.client.cli import main
from serving import Daemon

Invoke = Callable[..., Result]


@pytest.fixture
def corral(daemon: Daemon) -> Invoke:
    env = {"CORRAL_SOCKET": str(daemon.socket_path), "CORRAL_HOME": str(daemon.home)}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, "CORRAL_HOST": None})

    return invoke


def ps_rows(corral: Invoke) -> dict[str, list[str]]:
    """NAME -> the row's cells (split on the table's 4-space padding)."""
    result = corral("ps")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]
    cells = [[c.strip() for c in row.split("    ") if c.strip()] for row in rows]
    return {c[0]: c for c in cells}


def test_ps_shows_the_loaded_model_and_when_it_unloads(
    corral: Invoke, daemon: Daemon, tiny: str, tiny_gguf: Path
) -> None:
    assert corral("run", "--keepalive", "10m", tiny, "Hi").exit_code == 0
    row = ps_rows(corral)[tiny]
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert row[1] == digest[:12]
    assert row[2].endswith(("KB", "MB"))
    assert row[3] == "100% CPU"
    assert row[4].endswith("minutes from now")
    assert corral("run", "--keepalive", "-1", tiny, "Hi").exit_code == 0
    assert ps_rows(corral)[tiny][4] == "Forever"


def test_ps_json_is_the_api_answer(corral: Invoke, daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", keep_alive="5m", stream=False)  # load
    result = corral("ps", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = [m for m in json.loads(result.stdout)["models"] if m["name"] == tiny]
    assert entry["size"] > 0 and entry["size_vram"] == 0 and entry["expires_at"]


def test_stop_unloads_the_model_but_keeps_it_installed(
    corral: Invoke, daemon: Daemon, tiny: str
) -> None:
    daemon.client.generate(tiny, "", keep_alive=-1, stream=False)
    assert tiny in ps_rows(corral)
    result = corral("stop", tiny)
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert tiny not in ps_rows(corral)
    assert tiny in {m.name for m in daemon.client.list().models}


def test_stop_of_an_unknown_model_is_one_line(corral: Invoke, tiny: str) -> None:
    result = corral("stop", "nope", tiny)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: couldn't find model 'nope' to stop"


def test_run_keepalive_zero_unloads_after_the_answer(
    corral: Invoke, daemon: Daemon, tiny: str
) -> None:
    daemon.client.generate(tiny, "", keep_alive=-1, stream=False)
    assert corral("run", "--keepalive", "0", tiny, "Hi").exit_code == 0
    assert tiny not in ps_rows(corral)


def test_a_bad_keepalive_is_one_line(corral: Invoke, tiny: str) -> None:
    result = corral("run", "--keepalive", "soon", tiny, "Hi")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: invalid duration 'soon'")


def test_cp_gives_a_model_a_second_name(corral: Invoke, daemon: Daemon, tiny: str) -> None:
    result = corral("cp", tiny, "helper:v1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"copied '{tiny}' to 'helper:v1'"
    digests = {m.name: m.digest for m in daemon.client.list().models}
    assert digests["helper:v1"] == digests[tiny]
    assert corral("rm", "helper:v1").exit_code == 0


def test_cp_of_an_unknown_model_is_one_line(corral: Invoke) -> None:
    result = corral("cp", "nope", "other")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: model 'nope' not found")


def test_list_and_show_print_json_for_scripts(corral: Invoke, tiny: str) -> None:
    listing = corral("list", "--json")
    assert listing.exit_code == 0, listing.output
    names = [m["name"] for m in json.loads(listing.stdout)["models"]]
    assert tiny in names
    shown = corral("show", tiny, "--json")
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    assert info["details"]["family"] == "llama"
    assert info["model_info"]["llama.context_length"] == 256
    assert info["model_info"]["tokenizer.ggml.tokens"] is None
    verbose = json.loads(corral("show", tiny, "--json", "--verbose").stdout)
    assert verbose["model_info"]["tokenizer.ggml.tokens"][1] == "<|im_start|>"


def test_list_and_ps_keep_the_names_that_start_with_a_prefix(
    corral: Invoke, daemon: Daemon, tiny: str
) -> None:
    daemon.client.copy(tiny, "prefixed-one")
    daemon.client.generate(tiny, "", keep_alive="5m", stream=False)  # load
    listed = corral("list", "PREFIXED")  # as `ollama list qwen`; names ignore case
    assert listed.exit_code == 0, listed.output
    assert [row.split()[0] for row in listed.stdout.splitlines()] == ["NAME", "prefixed-one:latest"]
    as_json = json.loads(corral("ls", "tin", "--json").stdout)
    assert [m["name"] for m in as_json["models"]] == [tiny]
    assert list(ps_rows(corral)) == [tiny]
    assert corral("ps", "prefixed").stdout.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]
    assert json.loads(corral("ps", "nothing", "--json").stdout) == {"models": []}
