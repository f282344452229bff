"""iclkit: in-context learning measured against meta-learning on identical few-shot episodes."""

from .episodes import EpisodeConfig, read_episodes, sample_episodes, write_episodes
from .errors import IclkitError
from .learners import Learner, MethodContext, register
from .lm import GenerationRequest, LoglikelihoodRequest, ModelSpec, load_lm
from .prompts import PromptTemplate, load_prompt
from .runner import RunConfig, RunResult, evaluate, run
from .tasks import TaskData, TaskSpec, load_task
from .types import Episode, EpisodeResult, Example, Prediction

__version__ = "0.1.0"

__all__ = [
    "Episode", "EpisodeConfig", "EpisodeResult", "Example", "GenerationRequest", "IclkitError", "Learner",
    "LoglikelihoodRequest", "MethodContext", "ModelSpec", "Prediction", "PromptTemplate", "RunConfig", "RunResult",
    "TaskData", "TaskSpec", "evaluate", "load_lm", "load_prompt", "load_task", "read_episodes", "register", "run",
    "sample_episodes", "write_episodes",
]
