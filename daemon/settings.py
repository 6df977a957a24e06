"""Generation settings for one request: the request's options over the model's defaults.

The manifest's `parameters` (from its Modelfile recipe) are defaults; a
request's `options` override them field by field. Stop strings are the
union of both, so a model's own end markers always apply.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.client.api import Options, WireError
from corral.daemon.errors import RequestError
from corral.registry.manifest import Manifest
from corral.runtime.logprobs import MAX_TOP
from corral.runtime.sampling import SamplerOptions

log = logging.getLogger(__name__)

SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerOptions))


@dataclass(frozen=True)
class GenerationSettings:
    sampler: SamplerOptions
    num_predict: int  # -1: until a stop or the context is full
    num_ctx: int
    stop: tuple[str, ...]
    logprobs: int | None = None  # None: none; n: each token's, with the n most likely


def model_defaults(parameters: Mapping[str, Any]) -> Options:
    """A manifest's parameters as Options; a single stop string is allowed there."""
    values = dict(parameters)
    if isinstance(values.get("stop"), str):
        values["stop"] = [values["stop"]]
    try:
        return Options.from_dict(values)
    except WireError as e:
        log.warning("ignoring the model's parameters: %s", e)
        return Options()


def settings_for(
    request: Options | None, manifest: Manifest, default_num_ctx: int
) -> GenerationSettings:
    """The request's options over the model's parameters, checked: an out-of-range
    option raises RequestError (400). num_ctx is capped at the model's trained context
    length (when known), as the runtime caps it, so requests asking for more share one
    loaded copy."""
    request = request or Options()
    if request.ignored:
        log.warning("ignoring unsupported option(s): %s", ", ".join(request.ignored))
    defaults = model_defaults(manifest.parameters)
    merged = request.merged_over(defaults)
    _check_bounds(merged)
    stop = tuple(dict.fromkeys((*(request.stop or ()), *(defaults.stop or ()))))
    sampler_values = {name: getattr(merged, name) for name in SAMPLER_FIELDS}
    if sampler_values["seed"] is not None and sampler_values["seed"] < 0:
        sampler_values["seed"] = None  # Ollama's -1 (its default): a random seed
    return GenerationSettings(
        sampler=SamplerOptions(**{k: v for k, v in sampler_values.items() if v is not None}),
        num_predict=-1 if merged.num_predict is None else merged.num_predict,
        num_ctx=min(merged.num_ctx or default_num_ctx, manifest.context_length or sys.maxsize),
        stop=tuple(s for s in stop if s),
    )


def logprobs_wanted(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """How many of the most likely tokens to report beside each generated one (None: no
    log probabilities at all), from a request's `logprobs` and `top_logprobs`."""
    top = top_logprobs or 0
    if not 0 <= top <= MAX_TOP:
        raise RequestError(f"top_logprobs must be between 0 and {MAX_TOP}, got {top}")
    return top if logprobs else None


def _check_bounds(options: Options) -> None:
    if (problem := options.out_of_range()) is not None:
        raise RequestError(problem)
