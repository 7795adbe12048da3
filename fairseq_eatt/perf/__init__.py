"""Performance measurement behind fairseq-eatt-bench."""
