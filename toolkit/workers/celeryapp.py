"""The Celery application both sides share: broker, result backend, and the delivery rules that
make a job survive a worker's death (acked late, requeued when the worker is lost, one job
prefetched at a time), JSON only (no pickle through the broker)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from toolkit.workers import WorkerSettings


def make_celery(settings: WorkerSettings) -> Any:
    app = Celery("itops", broker=settings.broker, backend=settings.backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,  # acked when done: a job whose worker dies is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_default_queue="itops.default",
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app
