"""Ingest: Loghub Event_traces and session CSVs, raw log lines (formats, Drain3 mining), the
public Loghub converters, the hash split and the synthetic workload generator, and their runners."""
