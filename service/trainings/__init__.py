"""Training jobs over REST (`POST /trainings` ...): the training's directory and owner
(store.py), submission (submit.py), running them on trainers (runner.py: Celery by task name,
or a child process in embedded mode). The spec and status protocol are
`seam.modelrepo.trainings`; the trainer side is `seam.training.worker` (never imported here)."""
