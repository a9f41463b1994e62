"""Prometheus metrics, all in one place, named per Prometheus' naming guide: one common
prefix (``gateway_``), base units in the name (``_seconds``, ``_bytes``), ``_total`` on
counters. Every metric is listed in the README's Metrics table (tests/core/test_metrics.py
checks both)."""
from prometheus_client import Counter, Gauge, Histogram

UPLOADS = Counter(
    "gateway_upload_requests_total", "Upload requests by service and outcome", ["service", "outcome"]
)
UPLOAD_BYTES = Counter("gateway_upload_bytes_total", "Payload bytes stored in quarantine", ["service"])
REQUEST_SECONDS = Histogram(
    "gateway_upload_request_duration_seconds", "Time from request start to response", ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STAGE_SECONDS = Histogram(
    "gateway_stage_duration_seconds", "Time spent in each pipeline stage", ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)
VERDICTS = Counter("gateway_verdicts_total", "Verdicts handled by result", ["service", "result"])
SKIPPED_MESSAGES = Counter(
    "gateway_bus_messages_skipped_total", "Consumed messages logged and skipped", ["topic", "reason"]
)
OUTBOX_DEPTH = Gauge("gateway_outbox_messages", "Messages recorded but not yet delivered")
OUTBOX_DELIVERED = Counter("gateway_outbox_delivered_total", "Outbox messages delivered", ["topic"])
OUTBOX_FAILURES = Counter("gateway_outbox_send_failures_total", "Outbox batches that failed")
OUTBOX_PARKED = Counter("gateway_outbox_parked_total",
                        "Outbox messages the bus refused for good (too large, invalid), parked",
                        ["topic"])
CONSUMER_LAG = Gauge(
    "gateway_consumer_lag_seconds", "Age of the upload behind the last message a consumer handled", ["group"]
)
WATCHER_BACKLOG = Gauge(
    "gateway_watcher_backlog_files", "Files found in WATCH_DIR and not yet ingested, moved or failed"
)
WATCHER_FILES = Counter(
    "gateway_watcher_files_total",
    "Files the watcher finished, by outcome (ingested, duplicate, failed, ignored)",
    ["outcome"],
)
WATCHER_FAILURES = Counter("gateway_watcher_failures_total", "Files moved to Failed/, by reason", ["reason"])
WATCHER_RATE = Gauge(
    "gateway_watcher_throughput_files_per_second", "Files finished per second over the last few seconds"
)
VALIDATOR_VERDICTS = Counter(
    "gateway_validator_verdicts_total", "Verdicts published by the validators", ["service", "validation"]
)
VALIDATOR_SECONDS = Histogram(
    "gateway_validator_check_duration_seconds", "Fetch and check time per payload", ["service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
VALIDATOR_DEAD_LETTERS = Counter(
    "gateway_validator_dead_letters_total", "Announcements sent to the dead-letter topic", ["service"]
)
VALIDATOR_EXPIRED = Counter(
    "gateway_validator_expired_total",
    "Announcements given up after transient failures lasted past their validation timeout",
    ["service"],
)
VALIDATOR_REDRIVEN = Counter(
    "gateway_validator_redriven_total", "Dead letters moved back onto their service topic", ["service"]
)
VALIDATION_TIMEOUTS = Counter(
    "gateway_validation_timeouts_total", "Payloads rejected for lack of a verdict in time",
    ["service"],
)
CALLBACKS = Counter(
    "gateway_callbacks_total", "Verdicts posted to callback URLs, by outcome", ["outcome"]
)
PULL_FILES = Counter(
    "gateway_pull_files_total", "Remote files the puller finished, by provider and outcome (ingested, "
    "duplicate, failed, changed)", ["provider", "outcome"],
)
PULL_BYTES = Counter(
    "gateway_pull_bytes_total", "Bytes of the remote files the puller finished, by provider and outcome",
    ["provider", "outcome"],
)
PULL_JOB_SECONDS = Histogram(
    "gateway_pull_job_duration_seconds", "Pull jobs from start to end, by provider and final state",
    ["provider", "state"], buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
PULL_LAST_SUCCESS = Gauge(
    "gateway_pull_last_success_timestamp_seconds", "When a pull job of the provider last completed "
    "(Unix time)", ["provider"],
)
AREA_CHECKSUMS = Counter(
    "gateway_area_checksums_total", "Upload-area files the checksum workers finished, by result "
    "(checksummed, checksum_mismatch, skipped: replaced, deleted or done already)", ["result"],
)
AREA_CHECKSUM_BYTES = Counter(
    "gateway_area_checksum_bytes_total", "Bytes the checksum workers read and checksummed",
)
AREA_CHECKSUM_SECONDS = Histogram(
    "gateway_area_checksum_duration_seconds", "One upload-area file's checksum pass (read and hash)",
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
AREA_VALIDATIONS = Counter(
    "gateway_area_validations_total", "Upload-area validations finished, by state (valid, invalid, "
    "stale)", ["state"],
)
