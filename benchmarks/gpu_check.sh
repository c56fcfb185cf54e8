#!/usr/bin/env bash
# The GPU path, checked on a lent CUDA machine that runs its own python3 with torch (no registry
# there, so the project's pins that differ from its packages travel as wheels in .whl/):
#   1. tests/test_gpu.py (loss, gradients, bf16, training, saving, greedy decoding: GPU = CPU)
#      and the model and generation tests with a CUDA device visible;
#   2. benchmarks/bench_gpu.py: the default profile's training and narration timed on the GPU,
#      if the prepared data (data/processed/dataset.json, data/features) and an LLM shape
#      folder (gpu/llm_shape: models/base_llm's config and tokenizer) travelled with the tree.
# Writes its log and figures to $OUT (the device tool's output folder) or gpu_out/.
#
# Here, once, before the call (pins from requirements.txt):
#   echo /.whl/ >> .git/info/exclude; pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl transformers==5.24.0 tokenizers==0.23.3 \
#     peft==0.21.2 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/env.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_gpu.py tests/test_model.py tests/test_generate.py 2>&1 | tee "$OUT/pytest.log"
echo "pytest exit: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest.log"
if [ -f data/processed/dataset.json ] && [ -d gpu/llm_shape ]; then
    timeout 360 python3 benchmarks/bench_gpu.py --root . --llm-shape gpu/llm_shape --json "$OUT/bench_gpu.json" 2>&1 | tail -40 | tee "$OUT/bench_gpu.log"
fi
