"""Options models of the shell's own services (storage, uplink, status), composed into site.yaml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "TOPIC_PREFIX_PATTERN",
    "MqttTls",
    "MqttUplink",
    "PlatformCipher",
    "PlatformFraming",
    "PlatformMeter",
    "PlatformUplink",
    "ReportOptions",
    "StatusOptions",
    "StorageOptions",
]

# MQTT topic levels the agent publishes under: '+' and '#' are wildcards a publish may not carry, a space
# breaks `mosquitto_sub -v` output (topic SPACE payload), an empty level is a typo.
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$"


class _Strict(BaseModel):
    # No option here means anything by infinity or NaN; both would overflow or loop at runtime.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StorageOptions(_Strict):
    path: str = Field(
        default="state/edge-agent.db",
        description="State SQLite database (outbox, audit chain, ledger); relative to site.yaml's folder",
    )
    max_bytes: int = Field(
        default=1_000_000_000,
        ge=1_000_000,
        le=2**62,  # SQLite integers are 64-bit
        description="Disk the state database may take, its WAL included; checked at every commit, the "
        "oldest unsent readings dropped (audited) beyond it",
    )
    max_age_days: float = Field(
        default=90,
        gt=0,
        le=36500,  # a cut-off further back than a century overflows the date arithmetic
        description="Readings older than this are dropped, audited",
    )
    commit_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Longest wait before a durable commit"
    )
    memory_buffer_max: int = Field(
        default=100_000,
        ge=0,
        le=100_000_000,
        description="Readings held in memory while the disk is full; oldest dropped beyond this, audited",
    )
    max_events: int = Field(
        default=100_000,
        ge=100,
        le=2**62,
        description="Unsent events (audit records, findings, drops) kept; "
        "the oldest dropped beyond it, reported",
    )
    retain_acked: int = Field(
        default=10_000,
        ge=0,
        le=2**62,
        description="Acknowledged readings kept for `edge-agent tail` before deletion",
    )
    audit_key_file: str | None = Field(
        default=None,
        description="File holding an HMAC key (16+ bytes) that signs the audit chain; without it someone "
        "who can edit the database can rebuild the chain. Readable by the service only",
    )


class PlatformFraming(_Strict):
    """How one city's platform cuts the TCP stream into messages (STANDARDS.md: cities differ)."""

    kind: Literal["binary", "hex"] = Field(
        default="binary",
        description="binary: header, length, sequence, ciphertext, CRC, tail; "
        "hex: a length in hex digits then the ciphertext as hex text",
    )
    header_hex: str = Field(default="55AA55AA", pattern=r"^([0-9A-Fa-f]{2})*$", description="binary only")
    tail_hex: str = Field(default="68681616", pattern=r"^([0-9A-Fa-f]{2})*$", description="binary only")
    length_bytes: Literal[2, 4] = Field(default=4, description="Width of the length field (hex: digits/2)")
    length_endian: Literal["little", "big"] = "little"
    sequence_field: bool = Field(
        default=True, description="A 4-byte sequence number before the ciphertext (binary only)"
    )
    crc: Literal["none", "ccitt_false", "xmodem", "kermit", "modbus"] = Field(
        default="ccitt_false", description="CRC16 variant (binary only)"
    )
    crc_endian: Literal["little", "big"] = "big"
    crc_covers: Literal["body", "length_and_body"] = Field(
        default="body", description="body: sequence + ciphertext; length_and_body adds the length field"
    )


class PlatformCipher(_Strict):
    mode: Literal["cbc", "ecb", "none"] = "cbc"
    iv: Literal["key", "zero"] | str = Field(
        default="key", description="CBC IV: `key` (the key's 16 bytes), `zero`, or 32 hex digits"
    )
    padding: Literal["pkcs7", "zero"] = "pkcs7"


class PlatformMeter(_Strict):
    """One ledger meter as the platform knows it: ids the city assigns, per meter and function."""

    point: str = Field(description="Id of a cumulative point with an energy_code (a ledger meter)")
    meter_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    function_id: str = Field(default="1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    coding: str | None = Field(
        default=None, description="MOHURD item code sent in `coding`; defaults to the point's energy_code"
    )


class PlatformUplink(_Strict):
    """The municipal energy-monitoring platform (MOHURD data transmission protocol), beside MQTT."""

    host: str
    port: int = Field(default=9000, ge=1, le=65535)
    key_file: str = Field(
        description="File holding the 16-character AES/MD5 key the city issued; never put secrets in YAML"
    )
    md5_order: Literal["sequence_key", "key_sequence"] = Field(
        default="sequence_key", description="Concatenation order of the id_validate MD5"
    )
    framing: PlatformFraming = PlatformFraming()
    cipher: PlatformCipher = PlatformCipher()
    heartbeat_s: float = Field(default=60, ge=5, le=3600)
    period_min: int = Field(
        default=15,
        ge=1,
        le=1440,
        description="Report period until the server's `config` message says otherwise",
    )
    ack_timeout_s: float = Field(default=30, gt=0, le=600)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=300, gt=0, le=3600)
    meters: list[PlatformMeter] = Field(
        default_factory=list, description="What each period reports: ledger meters and their platform ids"
    )
    close_delay_s: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="A period is frozen from the ledger this long after its end (the last poll's energy in)",
    )
    report_ack: bool = Field(
        default=True,
        description="The platform acknowledges each `report` (continuous_ack/report_ack with its sequence); "
        "false: a report counts as delivered once the platform answered a later message on the connection",
    )
    max_backlog_periods: int = Field(
        default=35040,
        ge=1,
        le=10_000_000,
        description="Unacknowledged periods kept (a year of 15 min); the oldest dropped beyond it, audited",
    )


class MqttTls(_Strict):
    ca_file: str = Field(description="CA certificate (PEM) that signed the broker's certificate")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM), for mutual TLS")
    key_file: str | None = Field(default=None, description="Client private key (PEM)")
    insecure_skip_hostname_check: bool = False


V1_BATCH_MAX = 500  # uplink.batch_max when payload v1 and none given


class MqttUplink(_Strict):
    protocol: Literal["mqtt"] = "mqtt"
    host: str | None = Field(
        default=None, description="MQTT broker; absent when only the municipal platform (`platform`) is used"
    )
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(default=None, description="Defaults to the gateway_id")
    topic_prefix: str = Field(
        default="edge",
        pattern=TOPIC_PREFIX_PATTERN,
        max_length=128,
        description="Topics are {prefix}/{building_id}/{gateway_id}/...; one or more levels of letters, "
        "digits, '.', '_' or '-' separated by '/' (no MQTT wildcards, spaces or empty levels)",
    )
    credentials_file: str | None = Field(
        default=None, description="File with `username:password` on one line; never put secrets in YAML"
    )
    tls: MqttTls | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    batch_max: int = Field(
        default=2000,
        ge=1,
        le=10000,
        description="Readings per published message; default 2000 with payload v2 (about 50 device polls, "
        "10-25 kB compressed), 500 with v1",
    )
    max_packet_bytes: int = Field(
        default=256 * 1024,
        ge=4096,
        le=256 * 1024 * 1024,
        description="Largest readings message in bytes; a broker's smaller limit (MQTT v5 CONNACK) wins",
    )
    mqtt_version: Literal["5", "3.1.1"] = Field(
        default="5",
        description="MQTT v5 reads PUBACK reason codes (a publish the broker refuses stays in the outbox); "
        "3.1.1 for old brokers cannot tell a refused publish from a delivered one",
    )
    max_backoff_s: float = Field(
        default=5,
        gt=0,
        le=3600,
        description="Cap of the broker reconnect backoff: delivery resumes within about this long of the "
        "broker's return",
    )
    backoff_max_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Old name of `max_backoff_s`, still read; write `max_backoff_s` instead",
    )
    backoff_initial_s: float = Field(
        default=1.0, gt=0, le=3600, description="First reconnect delay (then doubled)"
    )
    payload: Literal["v1", "v2"] = Field(
        default="v2",
        description="Readings payload: v2 groups a device poll's values under one timestamp against a "
        "retained point schema (docs/uplink-schema.md); v1 is one JSON object per reading",
    )
    compress: bool = Field(
        default=True, description="v2: zlib-compress a readings message when that makes it smaller"
    )
    inflight_batches: int = Field(
        default=4, ge=1, le=64, description="Readings batches awaiting PUBACK at once; acknowledged in order"
    )
    connect_timeout_s: float = Field(
        default=15, gt=0, le=600, description="A connection without CONNACK after this long is retried"
    )
    publish_timeout_s: float = Field(
        default=30, gt=0, le=600, description="A batch without PUBACK after this long forces a reconnect"
    )
    platform: PlatformUplink | None = Field(
        default=None, description="The municipal energy-monitoring platform, beside (or instead of) MQTT"
    )

    @model_validator(mode="before")
    @classmethod
    def _old_backoff_name(cls, data: Any) -> Any:
        """Configs written before `max_backoff_s` keep working: the old name is read as the new one."""
        if isinstance(data, dict) and data.get("backoff_max_s") is not None:
            if data.get("max_backoff_s") is not None:
                raise ValueError(
                    "`backoff_max_s` is the old name of `max_backoff_s`: keep only `max_backoff_s`"
                )
            data = {**data, "max_backoff_s": data["backoff_max_s"], "backoff_max_s": None}
        if isinstance(data, dict) and data.get("batch_max") is None and data.get("payload") == "v1":
            # v1 is ~150 bytes a reading: 2000 would pass max_packet_bytes and be cut at every batch.
            data = {**data, "batch_max": V1_BATCH_MAX}
        return data

    @model_validator(mode="after")
    def _something_to_send_to(self) -> MqttUplink:
        if self.host is None and self.platform is None:
            raise ValueError(
                "uplink needs `host` (an MQTT broker), `platform` (the municipal platform) or both"
            )
        return self


class StatusOptions(_Strict):
    socket: str = Field(default="state/edge-agent.sock", description="UNIX socket `edge-agent status` asks")
    prometheus_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus text on 127.0.0.1:PORT (off when absent)"
    )


class ReportOptions(_Strict):
    """Report by exception (`report:` on a device or a point; the point's wins): which polled readings go
    to the outbox and the uplink. Snapshot, enforcement and ledger still see every poll."""

    on_change: bool = Field(
        default=True, description="Report a value that moved beyond the deadband from the last one reported"
    )
    deadband: float | None = Field(
        default=None, ge=0, le=1e12, description="Absolute, in the point's unit (default 0: any change)"
    )
    deadband_pct: float | None = Field(
        default=None, ge=0, le=100, description="Deadband in percent of the last reported value's magnitude"
    )
    max_interval_s: float = Field(
        default=900,
        gt=0,
        le=86400,
        description="Longest time without a report of the point: the last value is sent again (the heartbeat "
        "that tells a consumer it still holds)",
    )

    @model_validator(mode="after")
    def _one_deadband(self) -> ReportOptions:
        if self.deadband is not None and self.deadband_pct is not None:
            raise ValueError("give `deadband` (absolute) or `deadband_pct` (percent), not both")
        return self
