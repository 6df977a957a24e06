"""Go's text/template semantics that chat templates rely on; the expected outputs are what
Go's text/template prints for the same template and data."""

from __future__ import annotations

from typing import Any

import pytest

from corral.runtime.gotemplate import GoTemplateError, execute, parse
from corral.runtime.gotemplate.parse import MAX_DEPTH
from corral.runtime.gotemplate.values import go_print

SKIP_USERS = (
    '{{ range .Messages }}{{ if eq .Role "user" }}{{ continue }}{{ end }}{{ .Content }}{{ end }}'
)
MESSAGES = [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}]


def run(source: str, data: Any = None) -> str:
    return execute(parse(source), {"Messages": MESSAGES} if data is None else data)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a  {{- 1 -}}  b", "a1b"),
        ("a {{- /* note */ -}} b", "ab"),
        ("a {{/* note */}} b", "a  b"),
        ("x{{-3}}", "x-3"),  # a number, not a trim marker
        ('{{ `raw\\n` }}{{ "q\\n" }}', "raw\\nq\n"),
    ],
)
def test_text_trimming_comments_and_literals(source: str, expected: str) -> None:
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }};{{ end }}", "0=user;1=assistant;"),
        ("{{ range .Messages }}{{ .Content }}{{ else }}none{{ end }}", "ab"),
        ("{{ range .Nothing }}x{{ else }}none{{ end }}", "none"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        (SKIP_USERS, "b"),
        ("{{ range .Messages }}{{ .Content }}{{ break }}{{ end }}", "a"),
        ("{{ with .Messages }}{{ len . }}{{ end }}", "2"),
        ("{{ with .Missing }}x{{ else }}y{{ end }}", "y"),
        ("{{ if .A }}1{{ else if .B }}2{{ else }}3{{ end }}", "3"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ $last := eq (len (slice $.Messages 1)) 1 }}{{ $last }}", "true"),
        ("{{ (index .Messages 1).Content }}", "b"),
    ],
)
def test_control_structures_and_variables(source: str, expected: str) -> None:
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ and 1 "" 2 }}|{{ or 0 "" "x" }}|{{ and 1 2 }}', "|x|2"),
        ("{{ or .Missing.Deep 5 }}", "5"),
        ('{{ eq "b" "a" "b" }}{{ ne 1 2 }}{{ not "" }}{{ lt 1 2 }}', "truetruetruetrue"),
        ("{{ lt 1.5 2.5 }}{{ eq 1.0 1.0 }}{{ eq .Missing nil }}", "truetruetrue"),
        ('{{ len "é" }}', "2"),  # bytes, as Go counts
        ('{{ index "abc" 0 }} {{ index "é" 1 }}', "97 169"),  # a string's bytes, as in Go
        ('{{ print "a" 1 2 "b" }}|{{ println 1 "x" }}', "a1 2b|1 x\n"),
        ('{{ printf "%s=%d %q %v%%" "n" 3 "q" true }}', 'n=3 "q" true%'),
        ('{{ json "<a & b>" }}{{ .Messages | len }}', '"\\u003ca \\u0026 b\\u003e"2'),
        ("{{ .Missing }}", "<no value>"),
        ("{{ 1.5 }} {{ 1e6 }} {{ 0.00001 }}", "1.5 1e+06 1e-05"),
    ],
)
def test_functions_and_printing(source: str, expected: str) -> None:
    assert run(source) == expected


def test_go_prints_collections_as_fmt_does() -> None:
    assert go_print([1, "a", True]) == "[1 a true]"
    assert go_print({"b": 1, "a": None}) == "map[a:<no value> b:1]"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{{ .Prompt ", "line 1: unclosed action"),
        ("{{ if .A }}x", "missing {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ('{{ define "x" }}{{ end }}', "not supported in chat templates"),
        ("{{ upper .X }}", 'function "upper" not defined'),
        ("{{ .A | }}", "missing value for command"),
        ("a\n{{ (.A }}", "line 2: unclosed left paren"),
        ("{{ 0x" + "f" * 20_000 + " }}", "bad number constant 0xffff"),  # was a ValueError
        ("{{ 9223372036854775808 }}", "bad number constant"),  # Go: overflows int
    ],
)
def test_parse_errors_say_where_and_what(source: str, problem: str) -> None:
    with pytest.raises(GoTemplateError) as info:
        parse(source)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('{{ eq 1 "a" }}', "incompatible types for comparison"),
        ("{{ lt 1 2.5 }}", "incompatible types for comparison: int and float"),  # as in Go
        ("{{ eq 1 1.0 }}", "incompatible types for comparison: int and float"),
        ("{{ eq .Messages .Messages }}", "non-comparable type: list"),  # as Go's slices
        ("{{ ne (index .Messages 0) (index .Messages 1) }}", "non-comparable type: dict"),
        ("{{ $nope }}", "undefined variable: $nope"),
        ("{{ .Messages 1 }}", "can't give argument to non-function .Messages"),
        ("{{ index .Messages 5 }}", "index out of range"),
        ('{{ range "abc" }}{{ end }}', "range can't iterate over abc"),
    ],
)
def test_execution_errors_say_what(source: str, problem: str) -> None:
    with pytest.raises(GoTemplateError) as info:
        run(source)
    assert problem in str(info.value)


def test_a_template_that_loops_on_is_stopped() -> None:
    """10^16 empty iterations: stopped by the step budget, not run for years."""
    with pytest.raises(GoTemplateError, match="more than 1000000 steps"):
        run("{{ range 100000000 }}{{ range 100000000 }}{{ end }}{{ end }}")


def test_line_numbers_are_counted_as_the_lexer_goes() -> None:
    """Each action's line number was counted from the start of the template, which made
    parsing quadratic (43,000 actions: 2.4 s instead of 0.5 s); the count stays right."""
    with pytest.raises(GoTemplateError, match="line 40001: unclosed action"):
        parse("{{ .X }}\n" * 40_000 + "{{ .X ")


def test_nesting_is_limited_before_it_exhausts_the_stack() -> None:
    """A request's template 5000 levels deep was a RecursionError (a 500); it is refused
    with a line, and a template as deep as allowed still runs."""
    half = MAX_DEPTH // 2
    deepest = "{{ if true }}" * half + "{{ and " + "(and " * half + "1" + ")" * half + " }}"
    assert run(deepest + "{{ end }}" * half) == "1"
    for source in (
        "{{ if .A }}" * 5000 + "{{ end }}" * 5000,
        "{{ " + "(" * 5000 + ".A" + ")" * 5000 + " }}",
        "{{ if .A }}" * (half + 1) + "{{ " + "(" * half + ".A" + ")" * half + " }}",
    ):
        with pytest.raises(GoTemplateError, match=f"line 1: nested more than {MAX_DEPTH} deep"):
            parse(source)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('{{ $x := "ab" }}{{ range 60 }}{{ $x = print $x $x }}{{ end }}', "exceeds"),
        ('{{ $x := "<>" }}{{ range 40 }}{{ $x = json $x }}{{ end }}', "exceeds"),
        (
            '{{ $x := "ab" }}{{ range 23 }}{{ $x = print $x $x }}{{ end }}'
            "{{ range 1000000 }}{{ $n := len $x }}{{ end }}",
            "more than 1000000 steps",
        ),
    ],
    ids=["doubling", "json-escaping", "big-string-in-a-loop"],
)
def test_a_template_building_huge_values_is_stopped(source: str, problem: str) -> None:
    """A value doubled in a loop took all memory (the output limit did not see variables);
    a big value read in a loop ran for an hour in a step budget that counted it as one."""
    with pytest.raises(GoTemplateError, match=problem):
        run(source)


def test_printf_ignores_a_width_over_a_million_as_go_does() -> None:
    """%999999999d allocated a gigabyte; Go's fmt refuses widths and precisions over 1e6."""
    source = '{{ printf "%999999999d|%.9999999f|%5d|%-3s|" 1 1.5 2 "a" }}'
    assert run(source) == "%!(BADWIDTH)1|%!(BADPREC)1.500000|    2|a  |"
