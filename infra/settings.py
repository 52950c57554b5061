"""One typed settings object, read from ``HERALD_*`` environment variables.

Defaults point at the local stack that ``herald stack up`` starts on loopback.
Secrets are ``SecretStr`` so that printing the settings never leaks them.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.vocabulary import CHANNELS, Channel  # noqa: F401 - re-exported: the one declaration of the channels


def _default_home() -> Path:
    return Path.home() / ".cache" / "herald"


# the sandbox's credentials (`herald sandbox run` accepts them); never valid at a real provider
SANDBOX_SENDGRID_API_KEY = "SG.sandbox"
SANDBOX_TWILIO_ACCOUNT_SID = "ACsandbox00000000000000000000000000"
SANDBOX_TWILIO_AUTH_TOKEN = "sandbox-token"


class ApiConfig(BaseModel):
    """The HTTP API's section (``settings.api``; variables ``HERALD_API__*``)."""


    workers: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)) or 1, ge=1, le=64,
        description="uvicorn worker processes of `herald api` (default: the machine's cores)",
    )
    rate_limit: int = Field(100, ge=1, description="requests per API key per rate window")
    rate_window: int = Field(1, ge=1, description="rate-limit window, seconds")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body (413 beyond)")
    max_webhook_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024,
        description="largest webhook body (provider batches) and POST /v1/campaigns body (a list of user ids)",
    )
    sendgrid_webhook_max_age: float = Field(
        600.0, gt=0, description="seconds a signed SendGrid webhook stays acceptable after its timestamp (older: refused as a replay)"
    )
    public_url: str | None = Field(
        None, description="the URL providers call (e.g. https://herald.example.com); Twilio signs the full URL it called, "
        "and SMS get <public_url>/v1/webhooks/twilio as their StatusCallback (unset: no SMS receipts)"
    )
    commit_stall_seconds: float = Field(
        120.0, gt=0, description="/healthz fails when a partition with lag has not committed for this long"
    )
    health_cache_seconds: float = Field(2.0, ge=0, description="how long /healthz reuses its last Kafka offsets sample")
    key_cache_seconds: float = Field(5.0, ge=0, description="how long a looked-up API key is trusted (revocation delay)")
    template_cache_seconds: float = Field(10.0, ge=0, description="how long a known template's channels are cached")
    fast_accept: bool = Field(
        True, description="take a plainly acceptable POST /v1/notifications without FastAPI's machinery (same checks, "
        "same answer, about half the CPU); false: every request goes through FastAPI"
    )


class KafkaConfig(BaseModel):
    """How every Kafka client connects (``settings.kafka``; variables ``HERALD_KAFKA__*``).

    The same settings reach librdkafka (agents, producers, the CLI) and aiokafka (the Faust agents).
    """

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (a secret)")
    sasl_password_file: Path | None = Field(None, description="read the SASL password from this file (a mounted secret)")
    ssl_ca_file: Path | None = Field(None, description="CA certificate(s) that signed the brokers' certificates (PEM)")
    ssl_cert_file: Path | None = Field(None, description="client certificate (PEM), for mutual TLS")
    ssl_key_file: Path | None = Field(None, description="client private key (PEM), for mutual TLS")
    ssl_key_password: SecretStr | None = Field(None, description="password of the client private key")
    ssl_check_hostname: bool = Field(True, description="verify that the broker's certificate names its host")
    consumer_prefetch_kbytes: int = Field(
        8_192, ge=1_024, description="kilobytes of records each consumer fetches ahead of its agent (librdkafka's "
        "queued.max.messages.kbytes and fetch.max.bytes): while a backlog waits, a worker holds about this much per "
        "busy agent"
    )
    extra: dict[str, str] = Field(
        default_factory=dict, description="any other librdkafka property, as JSON (e.g. {\"client.rack\": \"eu-1a\"})"
    )

    @field_validator("sasl_password_file", "ssl_ca_file", "ssl_cert_file", "ssl_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # HERALD_KAFKA__SASL_PASSWORD_FILE= (empty) means no file, not the current directory
        return None if v == "" else v

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def password(self) -> str | None:
        """The SASL password: from ``sasl_password_file`` when set (re-read each time: secrets rotate), else the value."""
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return self.sasl_password.get_secret_value() if self.sasl_password is not None else None


class SchemaRegistryConfig(BaseModel):
    """A Confluent-compatible Schema Registry (``settings.schema_registry``; variables ``HERALD_SCHEMA_REGISTRY__*``).

    Unset ``url``: only Avro single-object encoding is read. Set: values in Confluent's wire format
    (``0x00`` + a 4-byte schema id, what ``KafkaAvroSerializer`` writes) are resolved through it too.
    """

    url: str | None = Field(
        None, description="Schema Registry URL(s), comma-separated (Confluent, Apicurio's /apis/ccompat/v7, Karapace); unset: off"
    )
    username: str | None = Field(None, description="basic-auth user of the registry (Confluent Cloud: the API key)")
    password: SecretStr | None = Field(None, description="basic-auth password of the registry (a secret)")
    ca_file: Path | None = Field(None, description="CA certificate(s) that signed the registry's certificate (PEM)")
    timeout: float = Field(5.0, gt=0, description="seconds one registry request may take; then the batch is retried")
    compatibility: Literal["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                           "FULL_TRANSITIVE"] = Field(
        "BACKWARD_TRANSITIVE", description="compatibility level `herald schemas register` sets on each subject"
    )

    @field_validator("url", "ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v


class WorkerConfig(BaseModel):
    """The ``herald worker`` process (``settings.worker``; variables ``HERALD_WORKER__*``)."""

    stall_seconds: float = Field(
        120.0, gt=0, description="/healthz answers 503 when an agent with a batch in hand has not finished it for this long"
    )
    stop_seconds: float = Field(
        30.0, gt=0, description="on SIGTERM, how long the batches in hand may take to finish and commit before the worker exits"
    )
    instance_id: str | None = Field(
        None, description="static group membership (group.instance.id, one per worker, stable across restarts): a restarted "
        "worker takes its partitions back at once"
    )
    static_session_seconds: float = Field(
        45.0, gt=0, description="session timeout with an instance_id: how long a stopped static member keeps its partitions"
    )
    engines: dict[str, Literal["faust", "batch"]] = Field(
        default_factory=dict, description="override an agent's engine, as JSON ({\"route\": \"batch\"})"
    )
    gc_young_objects: int = Field(
        50_000, ge=700, description="objects a worker allocates between two young garbage collections (Python's own: 700). "
        "A bulk batch keeps ~20 objects per recipient alive until it is done, so at 700 the collector ran every few "
        "recipients and walked them again each time: ~10 µs of CPU per campaign recipient in route-bulk"
    )
    faust_fetch_wait_ms: int = Field(
        100, ge=1, le=1500, description="longest wait of a Faust agent's fetch at the broker when nothing new is there (Faust's own: "
        "1500); it also bounds how long busy partitions wait behind a fetch of the quiet ones (infra/kafka/faust_transport.py)"
    )


class TopicsConfig(BaseModel):
    """Durability of Herald's topics (``settings.topics``; variables ``HERALD_TOPICS__*``). Unset: from the cluster."""

    replication_factor: int | None = Field(None, ge=1, description="replication factor of Herald's topics (unset: min(3, brokers))")
    min_insync_replicas: int | None = Field(
        None, ge=1, description="min.insync.replicas of Herald's topics (unset: 2 when the replication factor is 3 or more, else 1)"
    )
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000, description="retention of the work topics, ms (7 days)")
    dlq_retention_ms: int = Field(30 * 24 * 3600 * 1000, ge=60_000, description="retention of the dead-letter topic, ms (30 days)")


class RetentionConfig(BaseModel):
    """How long PostgreSQL keeps each table's rows (``settings.retention``; variables ``HERALD_RETENTION__*``).

    The scheduler's housekeeping deletes older rows in bounded batches; 0 keeps a table's rows forever.
    The dedup and ledger windows are the exactly-once windows: a record replayed later than them may be sent again.
    """

    dedup_days: int = Field(
        7, ge=0, description="days an (event, channel) claim is kept in PostgreSQL; an event replayed later may be sent again"
    )
    ledger_days: int = Field(
        30, ge=0, description="days a delivery stays in the ledger after its last change; a delivery replayed later may be sent again"
    )
    idempotency_days: int = Field(
        2, ge=0, description="days an API Idempotency-Key is remembered; a retry with the same key later makes a new notification"
    )
    status_history_days: int = Field(90, ge=0, description="days a status history row is kept (the notification row stays)")
    published_days: int = Field(7, ge=0, description="days a published scheduled (send_at, quiet-hours) row is kept for inspection")
    canceled_days: int = Field(7, ge=0, description="days a canceled scheduled row is kept for inspection")
    cancellations_days: int = Field(
        30, ge=0, description="days a cancel (by key or notification id) is remembered; an event that occurred before "
        "it and arrives later than this is sent"
    )
    digests_days: int = Field(7, ge=0, description="days a closed digest window and its events are kept for inspection")
    batch_rows: int = Field(10_000, ge=1, description="rows one DELETE removes (one short transaction)")
    max_batches: int = Field(100, ge=1, description="DELETEs per table per housekeeping run; the rest waits for the next run")

    @model_validator(mode="after")
    def _history_outlives_ledger(self) -> RetentionConfig:
        # a bulk delivery's 'sent' is its sent-once history row (its ledger row stays 'claimed'): deleted before the
        # ledger row, a replay would take the old claim over and send it again
        ledger, history = self.ledger_days or None, self.status_history_days or None
        if history is not None and (ledger is None or history < ledger):
            raise ValueError(
                f"status_history_days ({history}) must be 0 (kept forever) or at least ledger_days "
                f"({self.ledger_days}): the history records the bulk lane's sends, which the ledger reads; "
                "raise HERALD_RETENTION__STATUS_HISTORY_DAYS or lower HERALD_RETENTION__LEDGER_DAYS")
        return self


class CampaignConfig(BaseModel):
    """Campaigns: pre-flight, cancel, uploads (``settings.campaign``; variables ``HERALD_CAMPAIGN__*``)."""

    delivery_rate: float = Field(
        3500.0, gt=0, description="notifications per second the pipeline delivers, for pre-flight's duration estimate"
    )
    preflight_sample: int = Field(
        20, ge=1, description="recipients pre-flight renders (the first ones), plus the first of each further locale"
    )
    cancel_cache_seconds: float = Field(
        1.0, ge=0, description="how long workers trust their view of canceled campaigns, keys and notifications; a "
        "cancel is acknowledged after this"
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="largest recipient file POST /v1/campaigns/upload takes (streamed to disk)"
    )


class ConsoleConfig(BaseModel):
    """The operations console at /console of ``herald api`` (``settings.console``; variables ``HERALD_CONSOLE__*``)."""

    session_minutes: float = Field(480.0, gt=0, description="a sign-in lasts this long; then the console asks for the key again")
    secret: SecretStr | None = Field(
        None, description="signs session cookies (a secret); unset: a random one made once and shared by every API "
        "process through PostgreSQL")
    refresh_seconds: float = Field(5.0, gt=0, description="how often the console's pages refresh their numbers")


SANDBOX_UNSUBSCRIBE_SECRET = "herald-sandbox-unsubscribe-secret"


class UnsubscribeConfig(BaseModel):
    """One-click unsubscribe of marketing email (``settings.unsubscribe``; variables ``HERALD_UNSUBSCRIBE__*``)."""

    secret: SecretStr = Field(
        SecretStr(SANDBOX_UNSUBSCRIBE_SECRET),
        description="HMAC key of the unsubscribe links (a secret; HERALD_UNSUBSCRIBE__SECRET_FILE reads it from a file)",
    )
    base_url: str | None = Field(
        None, description="where the links point (unset: HERALD_API__PUBLIC_URL, else the local API address)"
    )
    mailto: str | None = Field(None, description="the List-Unsubscribe mailto address (unset: unsubscribe@ the sender's domain)")
    categories: list[str] = Field(
        ["marketing"], description="categories whose email carries List-Unsubscribe and that a link or a SendGrid "
                                   "unsubscribe/spamreport event turns off"
    )
    valid_days: int = Field(60, ge=1, description="days an unsubscribe link works after the email was sent")


class OtelConfig(BaseModel):
    """OpenTelemetry spans (``settings.otel``; variables ``HERALD_OTEL__*``); off unless an endpoint is set."""

    endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); unset: no spans are made"
    )
    service_name: str = Field("herald", description="the service.name of Herald's spans")


class ClusterConfig(BaseModel):
    """The local multi-broker cluster of ``herald stack up --brokers N`` (``settings.cluster``; ``HERALD_CLUSTER__*``)."""

    port: int = Field(19092, ge=1024, description="first broker port of `herald stack up --brokers N` (controllers +100, SASL_SSL +300)")
    heap: str = Field("320m", description="heap of each broker of the local cluster (-Xmx)")
    user: str = Field("herald", description="SCRAM user that `--security sasl_ssl` creates")


class SmsFailoverConfig(BaseModel):
    """A second Twilio account for SMS (``settings.sms_failover``; variables ``HERALD_SMS_FAILOVER__*``): sent to
    while the first account's circuit is open or when Twilio refuses the first account. Unset: none."""

    account_sid: str | None = Field(None, description="the second account's SID (unset: no second account)")
    auth_token: SecretStr | None = Field(None, description="its auth token (a secret; also signs its status callbacks)")
    sender: str | None = Field(None, description="its sending number (unset: HERALD_TWILIO_FROM)")
    base_url: str | None = Field(None, description="its Twilio API base URL (unset: HERALD_TWILIO_BASE_URL)")

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid and self.auth_token)


class ApnsConfig(BaseModel):
    """Apple push, direct (``settings.apns``; variables ``HERALD_APNS__*``). Unset files: the sandbox's, under ``HERALD_HOME``."""

    enabled: bool = Field(True, description="send APNs device tokens (64 hex characters) to APNs; false: every push token goes to FCM")
    url: str = Field("https://127.0.0.1:8028", description="APNs base URL (production: https://api.push.apple.com)")
    key_file: Path | None = Field(
        None, description="the .p8 token-signing key from Apple (default: the sandbox's, generated under HERALD_HOME/sandbox/apns)"
    )
    key: SecretStr | None = Field(None, description="the .p8 key's PEM text, instead of key_file (a secret: masked when printed)")
    key_id: str = Field("HERALDKEY1", description="key id of the .p8 key (the JWT's kid)")
    team_id: str = Field("HERALDTEAM", description="Apple developer team id (the JWT's iss)")
    topic: str = Field("com.herald.app", description="the app's bundle id (apns-topic)")
    ca_file: Path | None = Field(
        None, description="CA that signed the APNs server's certificate (default: system CAs; the sandbox's CA for a loopback URL)"
    )
    max_in_flight: int = Field(100, ge=1, le=1000, description="notifications in flight on the one HTTP/2 connection")
    token_refresh_seconds: float = Field(
        3000.0, ge=60, lt=3600, description="age at which the provider token (JWT) is renewed; Apple refuses it after an hour"
    )
    timeout: float = Field(15.0, gt=0, description="seconds one APNs request may take")


class DeliverTuning(BaseModel):
    """Tuning of the deliver agents (``settings.deliver``; variables ``HERALD_DELIVER__*``)."""

    breaker_failures: int = 5
    breaker_open_seconds: float = 60.0
    breaker_close_after: int = 2
    max_rate_wait: float = 10.0
    rate_wait_budget: float = 30.0
    claim_lease: float = 120.0
    device_failure_limit: int = 5
    max_chunk: int = 1000   # upper bound of one sink call (the sink's own limit applies too)
    # the bulk lane's deliver agents write their status rows to PostgreSQL themselves, in the batch that sent them,
    # instead of one StatusChange record per message through the status topic (the interactive lane always does that)
    bulk_statuses_direct: bool = True
    # batches a bulk deliver agent has in hand at once, each with a handler (and provider connection) of its own,
    # committed in order: one batch's round trips leave the CPU to another's work
    bulk_ahead: int = Field(2, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", env_nested_delimiter="__", extra="ignore")

    # --- connections ---------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka: KafkaConfig = Field(
        default_factory=KafkaConfig, description="Kafka connection: security protocol, SASL, TLS files, librdkafka extras"
    )
    database_url: SecretStr = Field(
        SecretStr("postgresql://herald@127.0.0.1:5432/herald"),
        description="PostgreSQL URL (the local stack trusts loopback)",
    )
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL")

    # --- the local stack -------------------------------------------------
    stack: Literal["local", "containers"] = Field(
        "local", description="local: jars + Debian packages; containers: testcontainers (needs Docker)"
    )
    home: Path = Field(default_factory=_default_home, description="jar cache, data and logs of the local stack")
    kafka_version: str = Field("4.1.1", description="org.apache.kafka:kafka_2.13 version from Maven Central")
    kafka_heap: str = Field("512m", description="broker heap (-Xmx)")

    # --- schemas -------------------------------------------------------------
    schemas_dir: Path | None = Field(
        None, description="a folder of upstream teams' <Name>.v<N>.avsc files, added to the packaged catalog"
    )
    schema_registry: SchemaRegistryConfig = Field(
        default_factory=SchemaRegistryConfig, description="Confluent-compatible Schema Registry: URL, credentials, compatibility"
    )

    # --- naming: tests use unique prefixes ----------------------------------
    topic_prefix: str = Field("herald", description="prefix of every Herald topic")
    redis_prefix: str = Field("herald", description="prefix of every Redis key")
    app_id: str = Field("herald", description="Kafka consumer-group prefix of the workers")
    partitions: int = Field(12, ge=1, description="partitions of the events, bulk and deliver topics")
    small_partitions: int = Field(3, ge=1, description="partitions of the retry, dlq, receipts, critical events and critical deliver topics")
    topics: TopicsConfig = Field(default_factory=TopicsConfig, description="replication factor, min.insync.replicas, retention")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="the local multi-broker cluster (ports, heap, user)")

    # --- pipeline ---------------------------------------------------------
    routes_file: Path | None = Field(None, description="routes YAML (default: the packaged infra/config/routes.yaml)")
    batch_size: int = Field(1000, ge=1, description="records per agent batch")
    bulk_batch_bytes: int = Field(
        400_000, ge=1, description="bytes of records per batch of the bulk lane's route and deliver agents (a campaign "
                                   "chunk of 500 recipients is ~20 kB, a chunk of 1000 rendered emails ~400 kB)")
    bulk_share_min_bytes: int = Field(
        1024, ge=0, description="a campaign email's parts travel once per chunk (pieces and each recipient's slot values) "
        "when their literal text is at least this long; a smaller template travels whole per recipient, which costs less")
    batch_within: float = Field(0.05, gt=0, description="seconds a bulk or status agent waits to fill a batch")
    interactive_within: float = Field(
        0.0, ge=0, description="seconds an interactive agent waits to fill a batch; 0: a batch goes as soon as the agent is free"
    )
    queued_status_bulk: bool = Field(
        False, description="also write a 'queued' status for bulk-lane deliveries (one more status record per campaign message)"
    )
    max_event_bytes: int = Field(
        256 * 1024, ge=1024, description="largest input record value an agent accepts; larger ones are dead-lettered too_large"
    )
    max_record_bytes: int = Field(
        1_000_000, ge=10_000, description="largest record Herald produces (key, value and headers; keep at or below the broker's limit)"
    )
    batch_infra_retries: int = Field(
        5, ge=0, description="infrastructure retries of a whole batch before its records are retried one by one"
    )
    retry_delays: list[float] = Field([60.0, 300.0, 900.0], description="retry ladder delays, seconds")
    recipient_cache_ttl: int = Field(300, description="seconds a recipient stays in the Redis cache")
    dedup_ttl: int = Field(7 * 24 * 3600, description="seconds an (event, channel) de-duplication key lives")
    metrics_port: int = Field(9108, description="worker Prometheus /metrics and /healthz port (0: off)")
    monitor_interval: float = Field(
        15.0, ge=0, description="seconds between the scheduler's samples of every agent's consumer lag and of the DLQ (0: off)"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address the worker's and the scheduler's /metrics and /healthz listen on (0.0.0.0 in a container)"
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="herald worker: liveness, stop bound, static membership, engines")
    campaign: CampaignConfig = Field(
        default_factory=CampaignConfig, description="campaigns: pre-flight estimate and sample, cancel, uploads"
    )
    unsubscribe: UnsubscribeConfig = Field(
        default_factory=UnsubscribeConfig, description="one-click unsubscribe: link secret, base URL, mailto, categories"
    )
    otel: OtelConfig = Field(default_factory=OtelConfig, description="OpenTelemetry spans: the OTLP endpoint, the service name")
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="days each PostgreSQL table keeps its rows; the scheduler purges older ones"
    )

    # --- providers (the sandbox by default) ------------------------------
    email_provider: Literal["smtp", "sendgrid"] = "smtp"
    email_failover_provider: Literal["smtp", "sendgrid"] | None = Field(
        None, description="a second email provider, sent to while the first one's circuit is open or when it refuses "
        "Herald's account (unset: none)"
    )
    sms_provider: Literal["twilio"] = "twilio"
    push_provider: Literal["fcm"] = "fcm"
    email_from: str = "Herald <no-reply@herald.local>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_connections: int = Field(8, ge=1, le=64, description="SMTP connections per deliver agent, sending a chunk side by side")
    sendgrid_api_key: SecretStr = SecretStr(SANDBOX_SENDGRID_API_KEY)
    sendgrid_host: str = Field("http://127.0.0.1:8025", description="SendGrid API base URL")
    twilio_account_sid: str = SANDBOX_TWILIO_ACCOUNT_SID
    twilio_auth_token: SecretStr = SecretStr(SANDBOX_TWILIO_AUTH_TOKEN)
    twilio_from: str = "+15005550006"
    twilio_base_url: str = Field("http://127.0.0.1:8026", description="Twilio API base URL")
    sms_failover: SmsFailoverConfig = Field(default_factory=SmsFailoverConfig,
                                            description="a second Twilio account for SMS failover")
    fcm_credentials_file: Path | None = Field(None, description="service-account JSON (default: a generated sandbox one)")
    fcm_url: str = Field("http://127.0.0.1:8027", description="FCM HTTP v1 base URL")
    apns: ApnsConfig = Field(default_factory=ApnsConfig, description="APNs: URL, .p8 key, key id, team id, topic, CA, streams in flight")
    sandbox_host: str = "127.0.0.1"

    deliver: DeliverTuning = Field(
        default_factory=DeliverTuning, description="deliver agents: circuit breaker, 429 waits, claim lease, device failures"
    )

    # --- API ---------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    sendgrid_webhook_public_key: str | None = None
    api: ApiConfig = Field(default_factory=ApiConfig, description="HTTP API: rate limit, body limits, health thresholds, caches")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, description="the console at /console: session length, cookie secret")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``HERALD_<SECRET>_FILE=/path`` reads that secret from a file (a mounted Kubernetes or Docker secret)."""
        if isinstance(data, dict):
            return secrets_from_files(cls, data, os.environ)
        return data

    @model_validator(mode="after")
    def _no_sandbox_credentials_beyond_loopback(self) -> Settings:
        if problems := sandbox_credentials_problems(self):
            raise ValueError("refusing to start with the sandbox's credentials for a real provider: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _failover_is_another_provider(self) -> Settings:
        if self.email_failover_provider is not None and self.email_failover_provider == self.email_provider:
            raise ValueError(f"HERALD_EMAIL_FAILOVER_PROVIDER is {self.email_failover_provider}, the same as "
                             "HERALD_EMAIL_PROVIDER: name the other one (smtp or sendgrid), or unset it")
        return self

    @field_validator("email_failover_provider", mode="before")
    @classmethod
    def _empty_failover_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("schemas_dir", "routes_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("retry_delays")
    @classmethod
    def _ladder_not_empty(cls, v: list[float]) -> list[float]:
        if not v or any(d <= 0 for d in v):
            raise ValueError("retry_delays needs at least one positive delay")
        return v

    # --- derived names ------------------------------------------------------
    def topic(self, name: str) -> str:
        """``topic("events")`` → ``herald.events``."""
        return f"{self.topic_prefix}.{name}"

    def rkey(self, *parts: str) -> str:
        return ":".join((self.redis_prefix, *parts))

    @property
    def retry_topics(self) -> list[str]:
        return [self.topic(f"retry.{tier_name(d)}") for d in self.retry_delays]

    @property
    def dsn(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def redis_dsn(self) -> str:
        return self.redis_url.get_secret_value()

    def to_env(self) -> dict[str, str]:
        """These settings as HERALD_* variables, for a child process (a worker, the scheduler)."""
        import json

        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, BaseModel):
                value = json.dumps(_revealed(value.model_dump(mode="python")), default=str)
            elif isinstance(value, (list, dict)):
                value = json.dumps(value)
            env[f"HERALD_{name.upper()}"] = str(value)
        return env

    def masked(self) -> dict[str, str]:
        """Every setting as printable text; secrets (and URL passwords) masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
                out[name] = _mask_url(text) if "://" in text else "**********"
            else:
                out[name] = str(value)
        return out


def _revealed(value: object) -> object:
    """A dumped section with its secrets as plain text: a child process must get the password, not ``**********``."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revealed(v) for v in value]
    return value


def tier_name(seconds: float) -> str:
    """60 → '1m', 300 → '5m', 900 → '15m', 2 → '2s'."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s".replace(".", "_")


def _mask_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _pw = creds.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}@{host}"


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def secret_file_variables(settings_cls: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """``HERALD_..._FILE`` variable → where its secret goes (field, or section and field).

    Every secret setting has one, except those whose section already has a ``<name>_file`` setting
    (``HERALD_KAFKA__SASL_PASSWORD_FILE``, ``HERALD_APNS__KEY_FILE``).
    """
    out: dict[str, tuple[str, ...]] = {}
    for name, info in settings_cls.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for inner, inner_info in sub.model_fields.items():
                if _is_secret(inner_info.annotation) and f"{inner}_file" not in sub.model_fields:
                    out[f"HERALD_{name.upper()}__{inner.upper()}_FILE"] = (name, inner)
        elif _is_secret(sub) and f"{name}_file" not in settings_cls.model_fields:
            out[f"HERALD_{name.upper()}_FILE"] = (name,)
    return out


def secrets_from_files(settings_cls: type[BaseModel], data: dict[str, Any], environ: Any) -> dict[str, Any]:
    """``data`` with each secret whose ``_FILE`` variable is set read from that file (surrounding whitespace dropped)."""
    data = dict(data)
    for variable, where in secret_file_variables(settings_cls).items():
        path = environ.get(variable)
        if not path:
            continue
        plain = "HERALD_" + "__".join(w.upper() for w in where)
        target = data
        if len(where) == 2:
            section = data.get(where[0])
            if section is not None and not isinstance(section, dict):
                continue  # a section given whole as an object: its secrets are already in it
            target = data[where[0]] = dict(section or {})
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from exc
        given = target.get(where[-1])
        if isinstance(given, SecretStr):
            given = given.get_secret_value()
        if given is not None and given != secret:  # equal: a child process that got the value read from the file
            raise ValueError(f"set {plain} or {variable}, not both")
        target[where[-1]] = secret
    return data


def _local(url: str, sandbox_host: str) -> bool:
    """Whether a URL (or a bare host) points at loopback or at the sandbox's host."""
    host = urlsplit(url if "://" in url else f"//{url}").hostname or ""
    if host in ("localhost", sandbox_host):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sandbox_credentials_problems(s: Settings) -> list[str]:
    """Providers beyond loopback that would be called with the sandbox's credentials (empty: none)."""
    problems: list[str] = []
    local = s.sandbox_host
    if "sendgrid" in (s.email_provider, s.email_failover_provider) and not _local(s.sendgrid_host, local) \
            and s.sendgrid_api_key.get_secret_value() == SANDBOX_SENDGRID_API_KEY:
        problems.append(f"HERALD_SENDGRID_HOST is {s.sendgrid_host}: set HERALD_SENDGRID_API_KEY (or _FILE)")
    if not _local(s.twilio_base_url, local):
        if s.twilio_auth_token.get_secret_value() == SANDBOX_TWILIO_AUTH_TOKEN:
            problems.append(f"HERALD_TWILIO_BASE_URL is {s.twilio_base_url}: set HERALD_TWILIO_AUTH_TOKEN (or _FILE)")
        if s.twilio_account_sid == SANDBOX_TWILIO_ACCOUNT_SID:
            problems.append(f"HERALD_TWILIO_BASE_URL is {s.twilio_base_url}: set HERALD_TWILIO_ACCOUNT_SID")
    if s.api.public_url and not _local(s.api.public_url, local) and s.twilio_auth_token.get_secret_value() == SANDBOX_TWILIO_AUTH_TOKEN:
        problems.append(f"HERALD_API__PUBLIC_URL is {s.api.public_url}: Twilio webhooks would be checked with the sandbox's "
                        "token, so anyone could forge them; set HERALD_TWILIO_AUTH_TOKEN (or _FILE)")
    unsub = s.unsubscribe.base_url or s.api.public_url
    if unsub and not _local(unsub, local) and s.unsubscribe.secret.get_secret_value() == SANDBOX_UNSUBSCRIBE_SECRET:
        problems.append(f"unsubscribe links point at {unsub}: anyone could sign them with the sandbox's secret; set "
                        "HERALD_UNSUBSCRIBE__SECRET (or _FILE)")
    if not _local(s.fcm_url, local) and s.fcm_credentials_file is None:
        problems.append(f"HERALD_FCM_URL is {s.fcm_url}: set HERALD_FCM_CREDENTIALS_FILE (the sandbox's generated one is used otherwise)")
    if s.apns.enabled and not _local(s.apns.url, local) and s.apns.key_file is None and s.apns.key is None:
        problems.append(f"HERALD_APNS__URL is {s.apns.url}: set HERALD_APNS__KEY_FILE or HERALD_APNS__KEY (the sandbox's key is "
                        "used otherwise)")
    return problems
