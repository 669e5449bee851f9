"""longserve: Ray Serve deployments with timeouts users control and understand."""

from longserve.model import Cancelled, Context, InvalidInput, Model

__all__ = ["Cancelled", "Context", "InvalidInput", "Model"]
