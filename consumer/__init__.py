"""The treatment-plan bundler and its association API (asset transfer workflow).

- ``naming``: case number, step and type from a file name (``ASSET_NAME_PATTERN``).
- ``records``: the asset-transfer tables and their queries (one record per content hash).
- ``plans``: treatment plans, their bundle claims and bundles (treatment-plan assets).
- ``events``: the consumer of ``platform.asset-transfer`` and ``platform.upload.available``;
  it records facts and marks the plans they touch as pending.
- ``bundler``: checks a pending plan and, when every transfer is uploaded and validated,
  builds its ``PROVPREV`` zip exactly once (a claim row in the database).
- ``role``: ``python app.py bundler``: the consumer plus the worker that drains pending plans.
- ``api``: the association API and the staff page (``/staff/``), served by the gateway.
"""
