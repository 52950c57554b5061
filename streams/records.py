"""Moved to ``infra.kafka.records`` (the wire layer); kept while callers move over."""
from infra.kafka.records import ATTEMPT, ORIGIN, TRACE, Headers, InRecord, OutRecord, new_trace_id, now_ms, record_size, set_header

__all__ = ["ATTEMPT", "ORIGIN", "TRACE", "Headers", "InRecord", "OutRecord", "new_trace_id", "now_ms", "record_size", "set_header"]
