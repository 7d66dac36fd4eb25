"""Trainings as jobs: `run_training(spec, workdir, progress)` (run.py) and the `seam trainer`
Celery worker that runs them (celery_app.py); the spec and status protocol are
`seam.modelrepo.trainings`."""
from seam.training.worker.run import AlreadyRunning, run_training

from seam.modelrepo.trainings import TrainingResult, TrainingSpec, TrainingStatus

__all__ = ["AlreadyRunning", "TrainingResult", "TrainingSpec", "TrainingStatus", "run_training"]
