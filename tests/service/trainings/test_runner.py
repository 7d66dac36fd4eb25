"""Broker mode's watch over the trainers (service/trainings/runner.CeleryTrainers): a running
training whose trainer stopped beating is sent to the trainers again, once per lost trainer; a
beating, queued or finished one never is."""
from __future__ import annotations

import time
from pathlib import Path

from seam.service.core.config import Settings
from seam.service.trainings.runner import CeleryTrainers
from seam.service.trainings.store import TrainingStore

from seam.modelrepo.trainings import HEARTBEAT_FILE, TrainingStatus, write_status, write_time
from tests.service.fakes import REDIS_URL


def _training(store: TrainingStore, state: str, beat: float | None) -> str:
    tid, d = store.new_dir()
    write_status(d, TrainingStatus(state=state))
    if beat is not None:
        write_time(d, HEARTBEAT_FILE, beat)
    store.write_owner(d, "k", "upload")
    return tid


def test_running_trainings_of_lost_trainers_are_sent_again(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=REDIS_URL, training_stale_s=60)
    store = TrainingStore(tmp_path)
    trainers = CeleryTrainers(settings, store)
    sent: list[str] = []
    trainers.submit = sent.append  # what would go to the broker
    lost = _training(store, "running", beat=1000.0)
    beating = _training(store, "running", beat=1050.0)
    _training(store, "queued", beat=None)  # waits in the queue: nobody to lose
    _training(store, "succeeded", beat=900.0)
    _training(store, "running", beat=None)  # a trainer from before heartbeats: not judged

    assert trainers.resend_orphans(now=1070.0) == [lost] and sent == [lost]
    assert "heartbeat stopped" in (store.root / lost / "log.txt").read_text()
    assert trainers.resend_orphans(now=1200.0) == [beating]  # nobody took `lost` yet: not sent twice
    write_time(store.root / lost, HEARTBEAT_FILE, 1300.0)  # a trainer took it, then died as well
    assert trainers.resend_orphans(now=1400.0) == [lost] and sent == [lost, beating, lost]


def test_embedded_children_outlive_the_thread_that_submitted_them(tmp_path: Path, monkeypatch) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: a training submitted from a request
    thread (anyio's pool retires them after 10 s idle) must not die with it."""
    import threading

    from seam.service.trainings import runner

    from testkit.processes import wait_until

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "sleeper.py").write_text("import time\ntime.sleep(60)\n")  # a trainer that never ends
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mods"))
    monkeypatch.setattr(runner, "TRAINER_MODULE", "sleeper")
    store = TrainingStore(tmp_path)
    tid = _training(store, "queued", None)
    trainers = runner.EmbeddedTrainers(Settings(data_dir=tmp_path, embedded_trainers=1), store)
    trainers.start()
    try:
        request_thread = threading.Thread(target=trainers.submit, args=[tid])
        request_thread.start()
        request_thread.join()  # the thread is gone, as an idle pool thread is
        wait_until(lambda: tid in trainers.running, 10, 0.05, "the training never started")
        child = trainers.running[tid]
        time.sleep(1.0)
        assert child.poll() is None, f"the trainer child died with the submitting thread (rc {child.returncode})"
    finally:
        trainers.stop()
    assert child.poll() is not None  # stop() ends the children
