"""Pull sources: the gateway fetches files from providers' SFTP servers.

Run it with ``python app.py puller`` (which also serves the jobs API, ``/metrics`` and
``/api/v1/health`` on ``LISTEN_PORT``), or as part of ``python app.py`` when
``PULL_PROVIDERS`` names a providers file (``pull.config``). The gateway serves the jobs
API (``pull.api``) whenever ``PULL_PROVIDERS`` is set.

- ``pull.config``: providers, checked whole at start-up.
- ``pull.service``: one loop per provider, holding its lease in the database; runs jobs
  posted through the API and scheduled ones.
- ``pull.job``: a job: listing, workers, retries with backoff, the end state.
- ``pull.remote``: the SFTP session (asyncssh): host keys, listing, completion actions.
- ``pull.download``: resumable downloads into an incomplete quarantine object (or, for
  providers with steps or ``compress``, an incomplete local file).
- ``pull.ingest``: steps (``core.steps``) and the ingest path (``core.ingest``).
- ``pull.store``, ``pull.schema``: jobs, files seen, leases (migrations 0009, 0013).

Work files live under ``WORKDIR/pull-work`` (``incomplete/<provider>/<file id>.part``
for providers with steps or ``compress``, and the steps' outputs).
"""
