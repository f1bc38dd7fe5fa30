"""Subject and motion learning."""

from dreamvideo_cli.learn.motion import MotionConfig, learn_motion
from dreamvideo_cli.learn.subject import SubjectConfig, learn_subject

__all__ = ["MotionConfig", "SubjectConfig", "learn_motion", "learn_subject"]
