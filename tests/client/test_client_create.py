"""`corral create NAME -f FILE` (YAML and Ollama's syntax) and `corral show --modelfile`,
in-process CLI against a real daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from corral.client.cli import main
from serving import Daemon

Invoke = Callable[..., Result]
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"


@pytest.fixture
def corral(daemon: Daemon) -> Invoke:
    env = {"CORRAL_SOCKET": str(daemon.socket_path), "CORRAL_HOME": str(daemon.home)}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, "CORRAL_HOST": None})

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.stderr.strip().splitlines()[-1]


def fields(daemon: Daemon, name: str) -> tuple:
    shown = daemon.client.show(name)
    messages = [(m.role, m.content) for m in shown.messages]
    digest = {m.name: m.digest for m in daemon.client.list().models}[name]
    return (digest, shown.parameters, shown.template, shown.system, messages, shown.license)


def test_create_from_a_yaml_modelfile(
    corral: Invoke, daemon: Daemon, tiny: str, tiny_gguf: Path, tmp_path: Path
) -> None:
    (tmp_path / "model.gguf").write_bytes(tiny_gguf.read_bytes())
    modelfile = tmp_path / "assistant.yaml"
    modelfile.write_text(
        "# a YAML Modelfile; the path is taken from its folder\n"
        "from: ./model.gguf\n"
        "parameters: {temperature: 0.4, stop: ['</s>']}\n"
        f"template: {yaml.safe_dump(TEMPLATE).strip()}\n"
        "system: Be brief.\n"
        "messages:\n  - {role: user, content: Hi}\n  - {role: assistant, content: Hello}\n"
        "license: mit\n"
    )
    result = ok(corral("create", "yml", "-f", str(modelfile)))
    assert result.stderr.splitlines()[-1] == "success"
    assert "writing manifest" in result.stderr
    shown = daemon.client.show("yml")
    assert (shown.system, shown.template, shown.license) == ("Be brief.", TEMPLATE, "mit")
    assert [(m.role, m.content) for m in shown.messages] == [("user", "Hi"), ("assistant", "Hello")]
    text = ok(corral("show", "yml", "--modelfile")).stdout
    written = yaml.safe_load(text)
    assert written["from"] == "yml:latest" and written["system"] == "Be brief."
    assert written["parameters"] == {"temperature": 0.4, "stop": ["</s>"]}
    assert f"FROM {tmp_path / 'model.gguf'}" in text  # the comment naming its source


def test_create_from_a_classic_modelfile_with_quantize(
    corral: Invoke, daemon: Daemon, tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Modelfile").write_text(
        f'FROM {tiny}\nparameter top_k 12\nSYSTEM """Line one.\nLine two."""\nMESSAGE user Hello\n'
    )
    monkeypatch.chdir(tmp_path)  # -f defaults to ./Modelfile
    result = ok(corral("create", "classic", "-q", "Q8_0"))
    assert "quantizing F32 model to Q8_0" in result.stderr
    shown = daemon.client.show("classic")
    assert shown.details.quantization_level == "Q8_0"
    assert shown.system == "Line one.\nLine two." and "top_k" in shown.parameters
    assert ok(corral("run", "classic", "Hi")).stdout  # the quantized model answers


def test_show_modelfile_recreates_the_model(
    corral: Invoke, daemon: Daemon, tiny: str, tmp_path: Path
) -> None:
    source = tmp_path / "Modelfile"
    source.write_text(
        f'FROM {tiny}\nPARAMETER seed 3\nPARAMETER stop "<|im_end|>"\nTEMPLATE """{TEMPLATE}"""\n'
        'SYSTEM "  padded  "\nMESSAGE assistant """Say "hi"."""\nLICENSE apache-2.0\n'
    )
    ok(corral("create", "original", "-f", str(source)))
    for syntax, text in (
        ("yaml", ok(corral("show", "original", "--modelfile")).stdout),
        ("classic", daemon.client.show("original").modelfile),
    ):
        again = tmp_path / f"again-{syntax}"
        again.write_text(text)
        ok(corral("create", f"copy-{syntax}", "-f", str(again)))
        assert fields(daemon, f"copy-{syntax}:latest") == fields(daemon, "original:latest")


def test_skipped_parameters_are_told_to_the_user(
    corral: Invoke, daemon: Daemon, tiny: str, tmp_path: Path
) -> None:
    path = tmp_path / "Modelfile"
    path.write_text(f"FROM {tiny}\nPARAMETER num_gpu 99\nPARAMETER temperature 0.5\n")
    result = ok(corral("create", "skips", "-f", str(path)))
    warning = "warning: Modelfile line 2: ignoring parameter 'num_gpu': corral does not use it"
    assert warning in result.stderr.splitlines()
    assert daemon.client.show("skips").parameters.split() == ["temperature", "0.5"]


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        ("FROM {tiny}\nPARAMETER temprature 1\n", (), "Error: Modelfile line 2: unknown parameter"),
        ("from: {tiny}\nparameters:\n  top_p: 7\n", (), "Error: Modelfile line 3: parameter"),
        ("FROM {tiny}\n", ("-q", "Q3_X"), "Error: unknown quantization type 'Q3_X'; choose one"),
        ("FROM nope\n", (), "Error: model 'nope' in FROM is neither installed nor in the catalog"),
        ("FROM {tiny}\nADAPTER ./x\n", (), "Error: Modelfile line 2: ADAPTER: adapters (LoRA)"),
    ],
)  # fmt: skip
def test_bad_modelfiles_are_one_line_errors(
    corral: Invoke, daemon: Daemon, tiny: str, tmp_path: Path, text: str, args: tuple, expected: str
) -> None:
    path = tmp_path / "Modelfile"
    path.write_text(text.replace("{tiny}", tiny))
    before = {m.name for m in daemon.client.list().models}
    assert one_line_error(corral("create", "broken", "-f", str(path), *args)).startswith(expected)
    assert {m.name for m in daemon.client.list().models} == before


def test_a_missing_modelfile_is_one_line(corral: Invoke, tiny: str, tmp_path: Path) -> None:
    result = corral("create", "x", "-f", str(tmp_path / "nope"))
    expected = f"Error: Modelfile {tmp_path / 'nope'} not found: name one with -f FILE"
    assert one_line_error(result) == expected
