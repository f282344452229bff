"""Learners: the protocol every method implements (ICL and baselines alike), their registry and typed options."""

from iclkit.learners.base import Adapted, Capabilities, Learner, MetaLearner, MethodContext, MultiOutput
from iclkit.learners.options import FeatureOptions, MetaTrainOptions, OptionSpec
from iclkit.learners.registry import available, check_options, entry, make, option_names, register, unregister

__all__ = ["Adapted", "Capabilities", "FeatureOptions", "Learner", "MetaLearner", "MetaTrainOptions", "MethodContext",
           "MultiOutput", "OptionSpec", "available", "check_options", "entry", "make", "option_names", "register",
           "unregister"]
