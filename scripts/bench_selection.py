"""E-ATT's selection on a CPU against the dense product, and its decoding step against fairseq's attention (see
fairseq_eatt/perf/selection_bench.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_eatt.perf.selection_bench import main  # noqa: E402

if __name__ == "__main__":
    main()
