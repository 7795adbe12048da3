"""fairseq-eatt-distill: sequence-level knowledge distillation with halved model dimensions (the paper's Figure 1).

1. the teacher translates the whole training set with beam search (fairseq-generate);
2. its translations become a new training set, binarized with the teacher's dictionaries (fairseq-preprocess);
   valid and test stay the original references. A translation longer than a * n + b tokens for a source of n
   tokens (``--teacher-max-len-a/-b``) is a degenerate, repeating output of a weak teacher: that sentence keeps its
   reference translation (students learn to repeat from such outputs; they were 10% of the target tokens of a
   small-scale teacher);
3. students of dimension d, d/2, ... (``--student-dims 512,256,128,64``) train on it (fairseq-train), ffn = 4d;
4. each student decodes the test set and is scored with sacreBLEU; ``summary.json`` lists dims, parameters, BLEU.

Every stage is resumable: finished outputs are reused, training continues from checkpoint_last.pt.
"""
import argparse
import os

from ..experiments.distill import DistillConfig, run

DEFAULTS = DistillConfig("", "", "", "", "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="the teacher's binarized data directory (train/valid/test, dictionaries)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint")
    p.add_argument("--workdir", required=True, help="where the distilled data, students and results go")
    p.add_argument("--source-lang", required=True)
    p.add_argument("--target-lang", required=True)
    p.add_argument("--student-dims", default=DEFAULTS.student_dims, help="comma-separated model dimensions")
    p.add_argument("--student-layers", type=int, default=DEFAULTS.student_layers,
                   help="encoder and decoder layers of the students")
    p.add_argument("--max-heads", type=int, default=DEFAULTS.max_heads,
                   help="heads of a student: min(max-heads, d / 8)")
    p.add_argument("--attention", default=DEFAULTS.attention,
                   help="attention variant of the students in all three positions (e.g. eatt or vanilla)")
    p.add_argument("--teacher-beam", type=int, default=DEFAULTS.teacher_beam,
                   help="beam size when the teacher decodes train")
    p.add_argument("--beam", type=int, default=DEFAULTS.beam, help="beam size of the students on test")
    p.add_argument("--lenpen", type=float, default=DEFAULTS.lenpen)
    p.add_argument("--teacher-max-len-a", type=float, default=DEFAULTS.teacher_max_len_a,
                   help="with --teacher-max-len-b: a teacher translation of more than a * n + b tokens for a source of "
                        "n tokens (BPE, end of sentence not counted) is degenerate and replaced by the reference")
    p.add_argument("--teacher-max-len-b", type=int, default=DEFAULTS.teacher_max_len_b, help="see --teacher-max-len-a")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="sentences per batch when decoding")
    p.add_argument("--train-args", default=DEFAULTS.train_args,
                   help="fairseq-train arguments shared by all students (quoted string)")
    p.add_argument("--post-process", default=DEFAULTS.post_process, help="fairseq-generate --post-process for scoring")
    p.add_argument("--distilled-dir", default=None,
                   help="where the teacher's translations and their binarized data go (default: --workdir); point "
                        "several student runs (e.g. vanilla and E-ATT students) at one folder to decode once")
    args = p.parse_args(argv)
    try:
        args.dims = [int(d) for d in args.student_dims.split(",") if d.strip()]
    except ValueError:
        p.error(f"--student-dims must be comma-separated integers, got {args.student_dims!r}")
    if not args.dims or any(d <= 0 or d % 2 for d in args.dims):
        p.error(f"--student-dims must be positive even integers, got {args.student_dims!r}")
    if not args.teacher_max_len_a >= 1.0 or args.teacher_max_len_b < 0:
        p.error(f"--teacher-max-len-a must be >= 1 and --teacher-max-len-b >= 0, got {args.teacher_max_len_a} and "
                f"{args.teacher_max_len_b}")
    if not os.path.isfile(args.teacher):
        p.error(f"--teacher {args.teacher}: no such checkpoint")
    for split in ("train", "valid", "test"):
        prefix = os.path.join(args.data, f"{split}.{args.source_lang}-{args.target_lang}.{args.source_lang}")
        if not os.path.exists(prefix + ".bin"):
            p.error(f"{args.data}: no binarized {split} split for {args.source_lang}-{args.target_lang}")
    return args


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
