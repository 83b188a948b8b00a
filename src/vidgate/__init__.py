"""vidgate: one API over every AI video model."""

from vidgate.errors import VidgateError
from vidgate.gateway import Gateway, generate
from vidgate.types import Constraints, Job, JobState, Reference, VideoRequest

__version__ = "0.1.0"
__all__ = [
    "Constraints",
    "Gateway",
    "Job",
    "JobState",
    "Reference",
    "VideoRequest",
    "VidgateError",
    "__version__",
    "generate",
]
