"""The metric side: @metric, the recorder, the table, baselines, the gate, the metrics JSON."""
