"""Language-model backends behind one batch-first interface."""

from iclkit.lm.base import LM, GenerationRequest, Loglikelihood, LoglikelihoodRequest
from iclkit.lm.loading import ModelSpec, load_lm

__all__ = ["LM", "GenerationRequest", "Loglikelihood", "LoglikelihoodRequest", "ModelSpec", "load_lm"]
