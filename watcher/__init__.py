"""The lab-share watcher: ingests the files that lab software drops in ``WATCH_DIR``.

Run it with ``python app.py watcher`` (it also serves ``/metrics`` and ``/api/v1/health``
on ``LISTEN_PORT``), or as part of ``python app.py`` when ``WATCH_DIR`` is set.

A file is taken once it is complete (``watcher.tracker``: size and mtime unchanged for
``WATCH_QUIET_SECONDS``, 2, and open for writing by no local process); hidden and
temporary files are ignored (``watcher.rules``). It goes through its rule's steps
(``core.steps``: decrypt, untar, gunzip) and the ingest path that HTTP uploads use, with
``sdc_asset_transfer_file_created``/``_uploaded`` on ``platform.asset-transfer``, then
moves to ``WATCH_DIR/Processed/`` (or ``Failed/`` with ``<name>.error.json``) keeping its
relative path; a name already taken there gets ``-2``, ``-3``... before its extension.
Each content is ingested once per name (``watcher.pipeline``). Only regular files are
read, without following any link; links, FIFOs, sockets, devices, hard links and names it
cannot handle go to ``Failed/`` unread (``watcher.files``).

Settings: ``WATCH_DIR``, ``WATCH_RULES`` (see ``watcher.rules``), ``WATCH_QUIET_SECONDS``
(2), ``WATCH_CONCURRENCY`` (8 files at a time), ``WATCH_MAX_RATIO`` (200) and
``WATCH_MAX_MEMBERS`` (10000) against archive bombs, ``MAX_LENGTH`` (largest payload, also
after unpacking), ``GPG_HOME`` and ``GPG_PASSPHRASE`` (for ``decrypt``); the work
directory is ``WORKDIR/watcher-work``.

The package itself imports nothing; ``watcher.config.preflight`` checks its variables at
start-up (``WATCH_DIR`` must exist: it is never created).
"""
