"""Endpoint resolution for the S3 client, cached per bucket rather than per object.

botocore resolves the endpoint of every request, and of every presigned URL, through S3's
endpoint rule set (``endpoint-rule-set-1.json``: ~1,000 rules). Its provider caches the
results (an LRU cache keyed on every parameter), but the parameters include the object's
``Key``, ``CopySource`` and ``Prefix``, so no two objects share an entry and each call
evaluates the rules again: in bench/scaleout.py that was 8 % of the gateway's samples
holding the GIL (PutObject, CopyObject and the presigned ``available`` URL of every
upload: ~0.3 ms each).

The rule set never reads those parameters (neither ``{"ref": ...}`` nor a ``{Name}``
template names them), so ``cache_endpoints`` makes the client's provider drop, before
its cache, every parameter the rule set does not mention: what it would compute is the
same, and a bucket's endpoint is computed once. Which parameters are dropped is derived
from the client's own rule set when the client is made, so a future rule set that reads
``Key`` keeps it. If botocore's internals differ from what this expects (no ruleset
resolver or provider), the client is left as it is.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from botocore.loaders import create_loader

logger = logging.getLogger(__name__)


class _ParameterDroppingProvider:
    """Wraps botocore's ``EndpointProvider``: ``resolve_endpoint`` without ``unused``."""

    def __init__(self, provider: Any, unused: frozenset[str]) -> None:
        self._provider = provider
        self.unused = unused

    def resolve_endpoint(self, **params: Any) -> Any:
        for name in self.unused:
            params.pop(name, None)
        return self._provider.resolve_endpoint(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


def unused_parameters(ruleset: dict[str, Any]) -> frozenset[str]:
    """The rule set's parameters that no rule mentions (by reference or in a template)."""
    rules = json.dumps({key: value for key, value in ruleset.items() if key != "parameters"})
    return frozenset(name for name in ruleset.get("parameters", {})
                     if not re.search(rf"\b{re.escape(name)}\b", rules))


def cache_endpoints(client: Any) -> frozenset[str]:
    """Make ``client``'s endpoint cache ignore the parameters its rule set never reads;
    returns them (empty: the client is unchanged)."""
    resolver: Any = getattr(client, "_ruleset_resolver", None)
    provider = getattr(resolver, "_provider", None)
    if provider is None or not hasattr(provider, "resolve_endpoint"):
        logger.info("S3 endpoint cache not installed: botocore has no ruleset provider here")
        return frozenset()
    model = client.meta.service_model
    ruleset = create_loader().load_service_model(model.service_name, "endpoint-rule-set-1",
                                                 model.api_version)
    unused = unused_parameters(ruleset)
    if unused:
        resolver._provider = _ParameterDroppingProvider(provider, unused)
    return unused
