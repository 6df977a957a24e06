"""Go's text/template, as far as Ollama's chat templates use it: parse, then execute.

nodes = parse(source)
text = execute(nodes, {"Messages": [{"Role": "user", "Content": "Hi"}]})
"""

from corral.runtime.gotemplate.execute import execute
from corral.runtime.gotemplate.lex import GoTemplateError
from corral.runtime.gotemplate.parse import parse

__all__ = ["GoTemplateError", "execute", "parse"]
