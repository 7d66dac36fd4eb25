"""Job-state backends: `base` (the interface and the state machine, written once), `redis`
(Celery mode) and `sqlite` (embedded mode). The in-memory store of the tests lives in
tests/service/fakes/store.py."""
