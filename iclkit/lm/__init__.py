"""Language models behind one batch-first protocol (``LM``), loaded by a registered backend (``load_lm``)."""

from iclkit.lm.base import LM, GenerationRequest, Loglikelihood, LoglikelihoodRequest
from iclkit.lm.registry import available_backends, load_lm, register_backend
from iclkit.lm.spec import ModelSpec

__all__ = ["LM", "GenerationRequest", "Loglikelihood", "LoglikelihoodRequest", "ModelSpec", "available_backends",
           "load_lm", "register_backend"]
