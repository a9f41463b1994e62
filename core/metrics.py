"""Prometheus metrics, all in one place. Names carry their units."""
from prometheus_client import Counter, Gauge, Histogram

UPLOADS = Counter(
    "upload_requests_total", "Upload requests by service and outcome", ["service", "outcome"]
)
UPLOAD_BYTES = Counter("upload_bytes_total", "Payload bytes stored in quarantine", ["service"])
REQUEST_SECONDS = Histogram(
    "upload_request_duration_seconds", "Time from request start to response", ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STAGE_SECONDS = Histogram(
    "upload_stage_duration_seconds", "Time spent in each pipeline stage", ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)
VERDICTS = Counter("upload_verdicts_total", "Verdicts handled by result", ["service", "result"])
SKIPPED_MESSAGES = Counter(
    "bus_messages_skipped_total", "Consumed messages logged and skipped", ["topic", "reason"]
)
OUTBOX_DEPTH = Gauge("upload_outbox_depth", "Messages recorded but not yet delivered")
OUTBOX_DELIVERED = Counter("upload_outbox_delivered_total", "Outbox messages delivered", ["topic"])
OUTBOX_FAILURES = Counter("upload_outbox_send_failures_total", "Outbox batches that failed")
OUTBOX_PARKED = Counter("upload_outbox_parked_total",
                        "Outbox messages the bus refused for good (too large, invalid), parked",
                        ["topic"])
CONSUMER_LAG = Gauge(
    "bus_consumer_lag_seconds", "Age of the upload behind the last message a consumer handled", ["group"]
)
WATCHER_BACKLOG = Gauge(
    "watcher_backlog_files", "Files found in WATCH_DIR and not yet ingested, moved or failed"
)
WATCHER_FILES = Counter(
    "watcher_files_total",
    "Files the watcher finished, by outcome (ingested, duplicate, failed, ignored)",
    ["outcome"],
)
WATCHER_FAILURES = Counter("watcher_failures_total", "Files moved to Failed/, by reason", ["reason"])
WATCHER_RATE = Gauge(
    "watcher_throughput_files_per_second", "Files finished per second over the last few seconds"
)
VALIDATOR_VERDICTS = Counter(
    "validator_verdicts_total", "Verdicts published by the validators", ["service", "validation"]
)
VALIDATOR_SECONDS = Histogram(
    "validator_check_duration_seconds", "Fetch and check time per payload", ["service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
VALIDATOR_DEAD_LETTERS = Counter(
    "validator_dead_letters_total", "Announcements sent to the dead-letter topic", ["service"]
)
VALIDATOR_EXPIRED = Counter(
    "validator_expired_total",
    "Announcements given up after transient failures lasted past their validation timeout",
    ["service"],
)
VALIDATOR_REDRIVEN = Counter(
    "validator_redriven_total", "Dead letters moved back onto their service topic", ["service"]
)
VALIDATION_TIMEOUTS = Counter(
    "upload_validation_timeouts_total", "Payloads rejected for lack of a verdict in time",
    ["service"],
)
CALLBACKS = Counter(
    "upload_callbacks_total", "Verdicts posted to callback URLs, by outcome", ["outcome"]
)
PULL_FILES = Counter(
    "pull_files_total", "Remote files the puller finished, by provider and outcome (ingested, "
    "duplicate, failed, changed)", ["provider", "outcome"],
)
PULL_BYTES = Counter(
    "pull_bytes_total", "Bytes of the remote files the puller finished, by provider and outcome",
    ["provider", "outcome"],
)
PULL_JOB_SECONDS = Histogram(
    "pull_job_duration_seconds", "Pull jobs from start to end, by provider and final state",
    ["provider", "state"], buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
PULL_LAST_SUCCESS = Gauge(
    "pull_last_success_timestamp_seconds", "When a pull job of the provider last completed "
    "(Unix time)", ["provider"],
)
