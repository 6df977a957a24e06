"""The slash commands of `corral run`'s chat, one table entry each (Ollama's set).

Each handler gets the chat and the text after the command, prints what it
did, and returns False only to leave the chat.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral.client.api import Options, ShowResponse, WireError
from corral.client.http import ResponseError
from corral.client.show import render_show

if TYPE_CHECKING:
    from corral.client.repl import Repl

Handler = Callable[["Repl", str], bool]
PARAMETER_WIDTH = 30

HELP = '''Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? set          Help for /set (and /? show for /show)

Use """ to begin a multi-line message.
Use Ctrl + d or /bye to exit.'''

SET_HELP = '''Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message (or a """ block)
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats'''

PARAMETER_HELP = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter stop <string> <string> ...   Set the stop parameters"""

SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template"""


def say(repl: Repl, text: str) -> bool:
    print(text, file=repl.out)
    return True


# ----- /set ------------------------------------------------------------------------


def _set_parameter(repl: Repl, text: str) -> bool:
    name, _, value = text.partition(" ")
    if not name or not value.strip():
        return say(repl, PARAMETER_HELP)
    new = {name: parse_value(name, value.strip())}
    try:
        checked = Options.from_dict({**repl.options, **new})
    except WireError as e:
        return say(repl, f"Couldn't set parameter: {e}")
    if (problem := checked.out_of_range()) is not None:  # the daemon would refuse it
        return say(repl, f"Couldn't set parameter: {problem}")
    if name in checked.ignored:
        return say(repl, f"Unknown parameter '{name}'. Type /set parameter for the list")
    repl.options.update(new)
    return say(repl, f"Set parameter '{name}' to '{value.strip()}'")


def parse_value(name: str, value: str) -> Any:
    """Numbers and booleans as JSON; `stop` takes several words, one stop string each."""
    if name == "stop":
        return value.split()
    try:
        return json.loads(value)
    except ValueError:
        return value


def _set_system(repl: Repl, text: str) -> bool:
    if not text.strip():
        return say(repl, SET_HELP)
    repl.system = text.strip()
    return say(repl, "Set system message.")


def _set_verbose(repl: Repl, text: str) -> bool:
    repl.verbose = True
    return say(repl, "Set 'verbose' mode.")


def _set_quiet(repl: Repl, text: str) -> bool:
    repl.verbose = False
    return say(repl, "Set 'quiet' mode.")


SET_COMMANDS: dict[str, Handler] = {
    "parameter": _set_parameter,
    "system": _set_system,
    "verbose": _set_verbose,
    "quiet": _set_quiet,
}


def _set(repl: Repl, text: str) -> bool:
    what, _, rest = text.partition(" ")
    handler = SET_COMMANDS.get(what)
    return handler(repl, rest) if handler else say(repl, SET_HELP)


# ----- /show -----------------------------------------------------------------------


def _show_parameters(repl: Repl, info: ShowResponse) -> str:
    lines = ["Model defined parameters:"]
    model_lines = info.parameters.splitlines()
    lines += [f"  {line}" for line in model_lines] or [
        "  No parameters were specified for this model."
    ]
    if repl.options:
        lines.append("User defined parameters:")
        lines += [f"  {k:<{PARAMETER_WIDTH}} {_shown(v)}" for k, v in repl.options.items()]
    return "\n".join(lines)


def _shown(value: object) -> str:
    """A parameter's value as Ollama prints it: a list as [a b c]."""
    return f"[{' '.join(map(str, value))}]" if isinstance(value, list) else str(value)


def _or(text: str, missing: str) -> str:
    return text if text.strip() else missing


SHOW_PARTS: dict[str, Callable[[Repl, ShowResponse], str]] = {
    "info": lambda repl, info: render_show(info),
    "license": lambda repl, info: _or(info.license, "No license was specified for this model."),
    "modelfile": lambda repl, info: info.modelfile,
    "parameters": _show_parameters,
    "system": lambda repl, info: _or(
        repl.system or info.system, "No system message was specified for this model."
    ),
    "template": lambda repl, info: _or(
        info.template, "No prompt template was specified for this model."
    ),
}


def _show(repl: Repl, text: str) -> bool:
    what = text.strip()
    part = SHOW_PARTS.get(what)
    if part is None:
        return say(repl, f"Unknown command '/show {what}'. Type /? for help" if what else SHOW_HELP)
    try:  # with the chat's /set system and /set parameter, as Ollama's /show does
        info = repl.client.show(repl.model, system=repl.system, options=repl.options or None)
    except ResponseError as e:
        return say(repl, f"Error: {e.message}")
    return say(repl, part(repl, info))


# ----- /load, /save ----------------------------------------------------------------


def _load(repl: Repl, text: str) -> bool:
    name = text.strip()
    if not name:
        return say(repl, "Usage:\n  /load <modelname>")
    try:
        repl.client.show(name)
    except ResponseError as e:
        return say(repl, f"Error: {e.message}")
    repl.model = name
    repl.history.clear()
    say(repl, f"Loading model '{name}'")
    try:
        repl.load()
    except ResponseError as e:
        return say(repl, f"Error: {e.message}")
    return True


def _save(repl: Repl, text: str) -> bool:
    """The conversation, system message and parameters as a new model (Ollama's /save).

    The new model starts from the current one; its example messages are the current
    model's followed by this chat's, so it opens where this conversation is."""
    name = text.strip()
    if not name:
        return say(repl, "Usage:\n  /save <modelname>")
    try:
        examples = repl.client.show(repl.model).messages
        repl.client.create(
            name,
            from_=repl.model,
            system=repl.system,
            parameters=repl.options or None,
            messages=[*examples, *repl.history],
            stream=False,
        )
    except ResponseError as e:
        return say(repl, f"Error: {e.message}")
    return say(repl, f"Created new model '{name}'")


# ----- the rest --------------------------------------------------------------------


def _help(repl: Repl, text: str) -> bool:
    topic = text.strip().lstrip("/")
    return say(repl, {"set": SET_HELP, "show": SHOW_HELP}.get(topic, HELP))


def _clear(repl: Repl, text: str) -> bool:
    repl.history.clear()
    return say(repl, "Cleared session context")


def _bye(repl: Repl, text: str) -> bool:
    return False


COMMANDS: dict[str, Handler] = {
    "/set": _set,
    "/show": _show,
    "/load": _load,
    "/save": _save,
    "/clear": _clear,
    "/bye": _bye,
    "/exit": _bye,
    "/?": _help,
    "/help": _help,
}
