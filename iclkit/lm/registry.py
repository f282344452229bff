"""Backend registry: ``ModelSpec.backend`` names the factory that turns a spec into an ``LM``.

Built-in backends are imported only when chosen (``"hf"`` pulls in torch and transformers). A second backend plugs in
in three steps:

1. Write a class with every member of ``iclkit.lm.LM`` — ``loglikelihood``, ``generate``, ``tokenize``,
   ``token_counts``, ``lead``, ``apply_chat_template``, ``hidden_states``, ``context_length``, ``device``,
   ``describe`` — following the contracts in ``iclkit/lm/base.py`` (results in request order, scores independent
   of batching, ``describe()`` with a ``weights_sha256`` if runs should use the score cache).
2. Register a factory from a ``ModelSpec`` to it, in the module that defines it::

       from iclkit.lm import ModelSpec, register_backend

       @register_backend("vllm")
       def load(spec: ModelSpec) -> VLLMModel:
           return VLLMModel(spec.name, revision=spec.revision, dtype=spec.dtype)

3. Make the module imported before ``load_lm`` runs: import it yourself (Python API), or declare it as an entry
   point of your package so that ``iclkit run --backend vllm`` finds it by name::

       [project.entry-points."iclkit.backends"]
       vllm = "my_package.vllm_backend"

Then ``load_lm(ModelSpec(name=..., backend="vllm"))`` (or ``--backend vllm``) loads it, ICL scores through it, and
``--embed lm`` embeds with its ``hidden_states``. A backend inside iclkit is listed in ``_BACKENDS``' built-in map
instead.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable, TypeVar

from iclkit.errors import IclkitError
from iclkit.lm.base import LM
from iclkit.lm.spec import EMBEDDED, ModelSpec
from iclkit.registry import Registry

Backend = Callable[[ModelSpec], LM]
F = TypeVar("F", bound=Backend)
ENTRY_POINTS = "iclkit.backends"


def _plugins() -> dict[str, str]:
    """Backend name → module, from installed packages' ``iclkit.backends`` entry points."""
    return {ep.name: ep.value.split(":")[0] for ep in metadata.entry_points(group=ENTRY_POINTS)}


# name → module that registers it on import (heavy dependencies load only for the backend a run uses)
_BACKENDS: Registry[Backend] = Registry("backend", "backend", {"hf": "iclkit.lm.hf"}, plugins=_plugins)


def register_backend(name: str) -> Callable[[F], F]:
    """Decorator: ``@register_backend("hf") def load(spec: ModelSpec) -> LM``; a later registration replaces it."""

    def deco(factory: F) -> F:
        _BACKENDS.add(name, factory)
        return factory

    return deco


def available_backends() -> list[str]:
    """Names ``ModelSpec.backend`` may take: registered, built in, or declared by an installed package."""
    return _BACKENDS.names()


def load_lm(spec: ModelSpec | str = EMBEDDED) -> LM:
    """Load the model ``spec`` describes (a bare string is a model name) with the backend it names."""
    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    name = spec.backend
    lm = _BACKENDS.get(name)(spec)
    if not isinstance(lm, LM):
        raise IclkitError(f"backend {name!r} returned a {type(lm).__name__}, which lacks members of iclkit.lm.LM",
                          field="backend", hint="see the checklist in iclkit/lm/registry.py")
    return lm
