"""LitServe serving the same model classes, for the side-by-side benchmark.
Run by benchmarks.run_all as a subprocess:

    python -m benchmarks.litserve_server --model benchmarks.echo_model:Echo --port 8123
    python -m benchmarks.litserve_server --model longserve.models.embedder:Embedder --port 8124 --batch 32 --batch-wait 0.005

POST /predict with the model's JSON input.
"""

import argparse

import litserve as ls

from longserve.server.model_server import load_model_class
from longserve.model import Context


class ModelAPI(ls.LitAPI):
    def __init__(self, class_path: str, **kwargs):
        super().__init__(**kwargs)
        self.class_path = class_path

    def setup(self, device):
        model_class = load_model_class(self.class_path)
        self.input = model_class.Input
        self.model = model_class()
        self.model.load("cpu")

    def decode_request(self, request):
        return self.input.model_validate(request)

    def predict(self, x):
        if self.max_batch_size > 1:  # x is a list of inputs
            return self.model.predict_batch(x)
        return self.model.predict(x, Context())

    def encode_response(self, output):
        return output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="import path of a longserve Model subclass")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1, help="max_batch_size (1: no batching)")
    parser.add_argument("--batch-wait", type=float, default=0.005)
    args = parser.parse_args()
    api = ModelAPI(args.model, max_batch_size=args.batch, batch_timeout=args.batch_wait if args.batch > 1 else 0.0)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
