"""fairseq-eatt: energy-efficient attention for fairseq machine translation.

torch and fairseq are deliberately not in install_requires:
- torch: a requirement here would let pip replace a user's CUDA build; install the one you want first.
- fairseq-fixed==0.12.3.1: its metadata asks for torchaudio, which drags in another torch. Install it with
  `pip install --no-deps --no-build-isolation fairseq-fixed==0.12.3.1` (the Makefile does this for you).
"""
import os
import sys

from setuptools import find_packages, setup


def l1_kernel():
    """E-ATT's compiled L1 kernel (fairseq_eatt/csrc), when torch is importable at build time (install with
    --no-build-isolation); without it the plugin falls back to the pure-PyTorch reference and says so."""
    if os.environ.get("FAIRSEQ_EATT_NO_KERNEL"):
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("fairseq-eatt: torch is not importable at build time; the compiled L1 kernel is skipped "
              "(pip install --no-build-isolation -e . after installing torch builds it)", file=sys.stderr)
        return {}
    # -fopenmp for at::parallel_for; the OpenMP symbols resolve to the runtime torch already loads
    ext = CppExtension("fairseq_eatt._pairwise_l1", ["fairseq_eatt/csrc/pairwise_l1.cpp"],
                       extra_compile_args=["-O3", "-fopenmp"])
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=False)}}


setup(
    name="fairseq-eatt",
    version="0.1.0",
    description="Energy-efficient attention (E-ATT and friends) as a fairseq --user-dir plugin",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_eatt", "fairseq_eatt.*"]),
    install_requires=[
        "numpy",
        "sacrebleu>=2.0",
        "sacremoses",
        "subword-nmt",
        "tqdm",
        "matplotlib",
        "hydra-core==1.3.2",
        "omegaconf==2.3.0",
        "bitarray",
        "regex",
        "cffi",
        "scikit-learn",
        "packaging",
        "onnx",  # fairseq-eatt-export
        "onnxruntime",  # the exported models' translator and its checks
    ],
    # GPU users: pip install "fairseq-eatt[gpu]" adds the Triton kernels of E-ATT's L1 scores and fused attention
    # (triton pulls no torch); without it the GPU runs the reference path, a CPU the compiled kernel
    # deployment: pip install "fairseq-eatt[deploy]" adds CTranslate2, the anchor fairseq-eatt-deploy-bench
    # measures E-ATT's deployed ways against (ctranslate2 pulls no torch)
    extras_require={"gpu": ["triton"], "deploy": ["ctranslate2>=4.0"]},
    **l1_kernel(),
    entry_points={
        "console_scripts": [
            "fairseq-eatt-demo = fairseq_eatt.cli.demo:main",
            "fairseq-eatt-binarization = fairseq_eatt.cli.binarization_stats:main",
            "fairseq-eatt-diagnose = fairseq_eatt.cli.diagnose:main",
            "fairseq-eatt-heatmap = fairseq_eatt.cli.heatmap:main",
            "fairseq-eatt-distill = fairseq_eatt.cli.distill:main",
            "fairseq-eatt-generate = fairseq_eatt.cli.generate:main",
            "fairseq-eatt-precision = fairseq_eatt.cli.precision:main",
            "fairseq-eatt-energy = fairseq_eatt.cli.energy:main",
            "fairseq-eatt-bench = fairseq_eatt.cli.bench:main",
            "fairseq-eatt-experiment = fairseq_eatt.cli.experiment:main",
            "fairseq-eatt-aggregate = fairseq_eatt.cli.aggregate:main",
            "fairseq-eatt-export = fairseq_eatt.cli.export:main",
            "fairseq-eatt-deploy-bench = fairseq_eatt.cli.deploy_bench:main",
            "fairseq-eatt-pack = fairseq_eatt.cli.pack:main",
            "fairseq-eatt-techniques = fairseq_eatt.cli.techniques:main",
            "fairseq-eatt-convert = fairseq_eatt.cli.convert:main",
            "fairseq-eatt-compare = fairseq_eatt.cli.compare:main",
        ],
    },
)
