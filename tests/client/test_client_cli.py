"""The `corral` commands (click's CliRunner) against a real daemon process and the tiny model."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corral.client.cli import main
from corral.client.http import Client, DaemonUnreachable
from serving import Daemon

Invoke = Callable[..., Result]


@pytest.fixture
def corral(daemon: Daemon) -> Invoke:
    """Run a `corral` command in-process, talking to the test daemon."""
    env = {"CORRAL_SOCKET": str(daemon.socket_path), "CORRAL_HOME": str(daemon.home)}

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, env={**env, "CORRAL_HOST": None})

    return invoke


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


def test_pull_of_a_local_file_says_what_it_is_called(corral: Invoke, tiny_gguf: Path) -> None:
    result = corral("pull", str(tiny_gguf))
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "pulling manifest"
    assert "installed as tiny:latest" in lines
    assert lines[-1] == "success"


def test_list_prints_ollamas_columns(corral: Invoke, tiny: str, tiny_gguf: Path) -> None:
    result = corral("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    (row,) = [r for r in rows if r.startswith(tiny)]
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert row.split()[:4] == [tiny, digest[:12], "440", "KB"]
    assert row.endswith(" ago")
    assert header.index("ID") == row.index(digest[:12])  # aligned columns
    assert corral("ls").stdout == result.stdout


def test_show_prints_the_model_section(corral: Invoke, tiny: str) -> None:
    result = corral("show", tiny)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "  Model"
    rows = {line.split(maxsplit=1)[0]: line.split()[-1] for line in lines[1:6]}
    assert rows["architecture"] == "llama"
    assert "    context length      256" in lines
    assert "    quantization        F32" in lines
    assert "<|im_start|>" in corral("show", tiny, "--template").stdout
    assert "architecture: llama" in corral("show", tiny, "--modelfile").stdout
    both = corral("show", tiny, "--license", "--system")
    assert both.exit_code == 2 and "only one of --license, --modelfile" in both.stderr


def test_run_answers_a_prompt(corral: Invoke, tiny: str) -> None:
    result = corral("run", tiny, "Why", "is", "the", "sky", "blue?")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert result.stdout.endswith("\n")


def test_run_verbose_prints_timings_on_stderr(corral: Invoke, tiny: str) -> None:
    result = corral("run", "--verbose", tiny, "Hello")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "total duration",
        "load duration",
        "prompt eval count",
        "prompt eval duration",
        "prompt eval rate",
        "eval count",
        "eval duration",
        "eval rate",
    ]
    assert re.fullmatch(r"eval count: {11}\d+ token\(s\)", lines[5])
    assert re.fullmatch(r"eval rate: {12}\d+\.\d\d tokens/s", lines[7])


def test_run_reads_piped_input(corral: Invoke, daemon: Daemon, tiny: str) -> None:
    started = daemon.log().count("generating from")
    result = corral("run", tiny, input="Summarize this text please.\n")
    assert result.exit_code == 0, result.output
    assert daemon.log().count("generating from") == started + 1


def test_run_sends_text_that_is_not_utf8_with_replacement_characters(
    corral: Invoke, daemon: Daemon, tiny: str
) -> None:
    # A Latin-1 file piped in, and an argument in a Latin-1 terminal (Python keeps its
    # byte as a lone surrogate): both are sent, their bad bytes as U+FFFD, as Ollama does.
    started = daemon.log().count("generating from")
    piped = corral("run", tiny, input=b"caf\xe9 au lait\n")
    assert piped.exit_code == 0, piped.output
    argument = corral("run", tiny, "caf\udce9 au lait")
    assert argument.exit_code == 0, argument.output
    assert daemon.log().count("generating from") == started + 2


def test_run_into_a_closed_pipe_ends_quietly(daemon: Daemon, tiny: str) -> None:
    env = {**os.environ, "CORRAL_SOCKET": str(daemon.socket_path), "CORRAL_HOME": str(daemon.home)}
    env.pop("CORRAL_HOST", None)
    corral = f"{shlex.quote(sys.executable)} -m corral.client"
    script = f"{corral} run {tiny} 'Tell me a long story' | head -c 1 >/dev/null"
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {script}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stderr == "", done.stderr  # no "Error: ... Broken pipe", no traceback
    assert done.returncode == 0


def test_rm_removes_several_and_reports_each(
    corral: Invoke, daemon: Daemon, tiny: str, tiny_gguf: Path
) -> None:
    for name in ("first", "second"):
        copy = tiny_gguf.with_name(f"{name}.gguf")
        copy.write_bytes(tiny_gguf.read_bytes())
        assert corral("pull", str(copy)).exit_code == 0
    result = corral("rm", "first", "nope", "second")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["deleted 'first'", "deleted 'second'"]
    assert result.stderr.strip() == "Error: model 'nope' not found, try `corral pull nope`"
    names = {m.name for m in daemon.client.list().models}
    assert {"first:latest", "second:latest"}.isdisjoint(names) and tiny in names


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("show", "nope"), "Error: model 'nope' not found, try `corral pull nope`"),
        (("show", "../x"), "Error: invalid model name '../x'"),
        (("run", "bad name!", "hi"), "Error: invalid model name 'bad name!'"),
        # a name typed in a Latin-1 terminal: Python keeps the byte as a lone surrogate
        (("show", "caf\udce9"), "Error: 'caf\\xe9' is not valid UTF-8"),
        (("rm", "caf\udce9"), "Error: 'caf\\xe9' is not valid UTF-8"),
        (("pull", "/nonexistent/model.gguf"), "Error: file /nonexistent/model.gguf not found"),
        (("pull", "pypi://corral-test-no-such-package-zz9"), "Error: package"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    corral: Invoke, args: tuple[str, ...], expected: str
) -> None:
    result = corral(*args)
    if args[0] == "pull":  # the progress lines come first
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.stderr.strip().splitlines()[-1].startswith(expected)
    else:
        assert one_line_error(result).startswith(expected)


@pytest.mark.parametrize("command", ["list", "ps"])
def test_a_host_that_does_not_resolve_is_named(command: str) -> None:
    """`.invalid` never resolves (RFC 6761): the error says so, not that corral is down."""
    env = {"CORRAL_HOST": "corral.invalid:11434", "CORRAL_SOCKET": None}
    result = CliRunner().invoke(main, [command], env=env)
    line = one_line_error(result)
    assert line.startswith("Error: cannot reach corral at http://corral.invalid:11434: ")
    assert line.endswith("(check CORRAL_HOST)")
    with pytest.raises(DaemonUnreachable):
        Client("corral.invalid:11434").list()


def test_a_daemon_that_is_not_there_over_tcp(daemon: Daemon) -> None:
    env = {"CORRAL_HOST": "127.0.0.1:9", "CORRAL_SOCKET": None}
    result = CliRunner().invoke(main, ["list"], env=env)
    assert one_line_error(result) == (
        "Error: corral is not running at http://127.0.0.1:9 (start it with `corral serve`)"
    )
