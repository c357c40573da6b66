"""What a run tells: the terminal lines, report.md, progress.png, the learned parameters."""
