from .controller import FINALIZER, TrainingJobController

__all__ = ["FINALIZER", "TrainingJobController"]
