"""Energy accounting: operation counts declared by the attention variants, per-operation energy tables, and the
paper's tables computed from them (``fairseq-eatt-energy``)."""
