"""`memory-service worker`: run ingestion jobs from the queue until stopped.

SIGTERM and Ctrl-C stop it cleanly: the job in hand is released (its open batch rolls back,
it is queued again and the interrupted attempt does not count), and the command exits 0.
`--until-idle` exits once no job is due (for cron and scripts).
"""

import asyncio
import logging
import signal
from collections.abc import Mapping

from memory_service.bootstrap import open_resources
from memory_service.core.settings import Settings
from memory_service.documents.jobs.worker import job_worker

log = logging.getLogger(__name__)


async def work(settings: Settings, environ: Mapping[str, str], *, until_idle: bool) -> int:
    async with open_resources(settings, environ=environ, serving=False) as resources:
        if resources.documents is None:
            log.error("cannot run ingestion jobs: %s", resources.documents_unavailable)
            return 2
        worker = job_worker(settings, resources.engine, resources.documents)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            clean = await worker.run(stop, until_idle=until_idle)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    return 0 if clean else 1
